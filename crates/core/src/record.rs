//! The versioned on-disk record codec: family records (version 1) and access records (version
//! 2; version 1 is still read).
//!
//! Every record is `version ‖ key id ‖ plaintext header ‖ MAC ‖ sealed parts`:
//!
//! * the fixed-size **header** holds what lookups decide on (state, deadlines, generation, the
//!   current token's hash) in plaintext, so validation needs no decryption;
//! * the **record MAC** is a keyed BLAKE3 (a key per table, derived from the sealing key named
//!   by the key id) over the record key, the version, the key id and the header: no header field
//!   can be edited and no record moved to another key or table without detection. It is checked
//!   on every full decode, before any field is believed;
//! * an access record's header also carries a **status MAC** over the access key and the fields
//!   a validation reads (state, family, issue time), sized to one BLAKE3 block: a status check
//!   ([`AccessRecord::decode_status`]) verifies that MAC alone, one compression instead of the
//!   record MAC's two (see [`AccessRecord`] for the layout);
//! * the **sealed parts** — the body (subject, client id, scope, caller claims) and, for a family
//!   in its grace window, the successor's secret — are XChaCha20-Poly1305 ciphertexts whose AAD
//!   binds them to their table, record key and key id (and generation, for the grace slot): they
//!   cannot be edited or moved between records, and are authenticated when opened.
//!
//! These types are the storage format, separate from the API types of `tokendb`.

use crate::CoreError;
use crate::codec::{Reader, put_bytes16, put_bytes32};
use crate::ids::{ACCESS_KEY_LEN, AccessKey, FamilyId, IndexHash, TokenId};
use crate::keys::KeyRing;
use crate::scope::Scope;
use crate::seal::{KeyId, MAC_LEN, MacDomain};
use crate::secret::{SECRET_LEN, TokenSecret};
use zeroize::Zeroizing;

/// The format version of family records.
pub const FAMILY_RECORD_VERSION: u8 = 1;
/// The format version of the access records this build writes. It reads versions 1 and 2.
pub const ACCESS_RECORD_VERSION: u8 = 2;
/// Longest subject id accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 1024;
/// Longest client id accepted, in bytes.
pub const MAX_CLIENT_ID_LEN: usize = 512;
/// Largest caller claims blob accepted, in bytes.
pub const MAX_CLAIMS_LEN: usize = 16 * 1024;

/// Which table a record lives in; bound into its MAC and AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordTable {
    /// `families`, keyed by family id.
    Families,
    /// `tokens`, keyed by token id.
    Tokens,
}

impl RecordTable {
    const fn mac_domain(self) -> MacDomain {
        match self {
            Self::Families => MacDomain::Families,
            Self::Tokens => MacDomain::Tokens,
        }
    }

    const fn to_byte(self) -> u8 {
        match self {
            Self::Families => 1,
            Self::Tokens => 2,
        }
    }
}

/// Why a token or family was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevokeReason {
    /// Revoked on request (RFC 7009, or by family id).
    Requested,
    /// Revoked with all tokens of its subject.
    Subject,
    /// Revoked with all tokens of its client.
    Client,
    /// An already-rotated refresh token of the family was presented again.
    ReuseDetected,
    /// Evicted by the per-subject-per-client family cap.
    Evicted,
    /// Revoked because its family was revoked.
    Family,
}

impl RevokeReason {
    const fn to_byte(self) -> u8 {
        match self {
            Self::Requested => 1,
            Self::Subject => 2,
            Self::Client => 3,
            Self::ReuseDetected => 4,
            Self::Evicted => 5,
            Self::Family => 6,
        }
    }

    const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Requested,
            2 => Self::Subject,
            3 => Self::Client,
            4 => Self::ReuseDetected,
            5 => Self::Evicted,
            6 => Self::Family,
            _ => return None,
        })
    }

    /// A short stable name, for logs and the CLI.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Subject => "subject",
            Self::Client => "client",
            Self::ReuseDetected => "reuse_detected",
            Self::Evicted => "evicted",
            Self::Family => "family",
        }
    }
}

/// Stored state of a family or token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Usable until its deadlines.
    Active,
    /// Revoked; kept until its deadline so lookups answer "revoked", not "unknown".
    Revoked {
        /// Why.
        reason: RevokeReason,
        /// When, Unix ms.
        at: u64,
    },
}

impl RecordState {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Active => {
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&0u64.to_be_bytes());
            }
            Self::Revoked { reason, at } => {
                out.extend_from_slice(&[1, reason.to_byte()]);
                out.extend_from_slice(&at.to_be_bytes());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, CoreError> {
        let (tag, reason, at) = (r.u8()?, r.u8()?, r.u64()?);
        match (tag, reason, at) {
            (0, 0, 0) => Ok(Self::Active),
            (1, reason, at) => Ok(Self::Revoked {
                reason: RevokeReason::from_byte(reason)
                    .ok_or(CoreError::BadField("revoke reason"))?,
                at,
            }),
            _ => Err(CoreError::BadField("state")),
        }
    }

    /// Whether the state is revoked.
    #[must_use]
    pub fn is_revoked(&self) -> bool {
        matches!(self, Self::Revoked { .. })
    }
}

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

fn body_aad(table: RecordTable, record_key: &[u8], key_id: KeyId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(24 + record_key.len());
    aad.extend_from_slice(b"tokendb/body/v1\0");
    aad.push(table.to_byte());
    aad.extend_from_slice(record_key);
    aad.extend_from_slice(&key_id.0.to_be_bytes());
    aad
}

fn grace_aad(family: &FamilyId, generation: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(48);
    aad.extend_from_slice(b"tokendb/grace/v1\0");
    aad.extend_from_slice(family.as_bytes());
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
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
        key.seal(&body_aad(table, record_key, key.id()), &pt),
    ))
}

fn open_body(
    keys: &KeyRing,
    table: RecordTable,
    record_key: &[u8],
    key_id: KeyId,
    sealed: &[u8],
) -> Result<RecordBody, CoreError> {
    let pt = keys
        .sealing(key_id)?
        .open(&body_aad(table, record_key, key_id), sealed)?;
    RecordBody::decode(&pt)
}

/// Bytes of a family record's authenticated header, version and key id included.
const FAMILY_HEADER_LEN: usize = 1 + 4 + STATE_LEN + 5 * 8 + 32 + 16 + 16;
/// Bytes of a version 1 access record's authenticated header, version and key id included.
const ACCESS_V1_HEADER_LEN: usize = 1 + 4 + STATE_LEN + 1 + 16 + 16 + 16 + 8 + 8;
const STATE_LEN: usize = 1 + 1 + 8;
/// Where a version 2 access record's status block starts: after the version and the key id.
const STATUS_AT: usize = 1 + 4;
/// A version 2 status block: state (1) ‖ family id (16) ‖ issued at (8).
const STATUS_LEN: usize = 1 + 16 + 8;
/// How much of the 40-byte access key the status MAC binds: the deadline and the first 31 bytes
/// of the token id, so that with the status block its input is the 64 bytes of one BLAKE3 block.
/// The record is found under the whole key; moving it to another key that the MAC would accept
/// needs two token ids equal in 248 bits (a 2^124 birthday search over keyed hashes). The record
/// MAC binds the whole key.
const STATUS_KEY_LEN: usize = ACCESS_KEY_LEN - 1;
const _: () = assert!(STATUS_KEY_LEN + STATUS_LEN == 64);
/// Bytes of a version 2 access record's header under the record MAC: version, key id, status
/// block, status MAC, revoked at, subject hash, client hash.
const ACCESS_V2_HEADER_LEN: usize = STATUS_AT + STATUS_LEN + MAC_LEN + 8 + 16 + 16;

/// Checks version, key id and the MAC of the fixed-size header at the front of `bytes`.
/// Returns the key id, a reader over the header fields (after version and key id) and a reader
/// over the sealed tail (after the MAC).
fn verify<'a>(
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
fn append_mac(
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

/// A family: one login's grant lineage, and its single current refresh token.
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
        let mut out = Vec::with_capacity(160 + self.grace.len() + self.body.len());
        out.push(FAMILY_RECORD_VERSION);
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
        let (key_id, mut r, mut tail) = verify(
            keys,
            RecordTable::Families,
            id.as_bytes(),
            bytes,
            (FAMILY_RECORD_VERSION, FAMILY_HEADER_LEN),
        )?;
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

/// An access token record.
///
/// Stored as version 2 (version 1 records, written before it, are still read):
///
/// ```text
/// version 2 (1) ‖ key id (4)
/// ‖ status block: state (1: 0 active, else the revoke reason) ‖ family id (16: zeros when
///   standalone) ‖ issued at (8: Unix ms)
/// ‖ status MAC (16): BLAKE3-keyed(token-status key, access key without its last byte (39)
///   ‖ status block (25))
/// ‖ revoked at (8) ‖ subject hash (16) ‖ client hash (16)
/// ‖ record MAC (16): BLAKE3-keyed(tokens key, access key ‖ everything above)
/// ‖ sealed body (u32 length ‖ XChaCha20-Poly1305)
/// ```
///
/// The status MAC's input is exactly one BLAKE3 block, so a status check
/// ([`AccessRecord::decode_status`]) costs one compression; everything else checks the record
/// MAC, which covers the whole header. The deadline is not stored: it is the access key's.
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
    /// Encodes and authenticates the record for storage under `key`, as version 2.
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
        let mut out = Vec::with_capacity(ACCESS_V2_HEADER_LEN + MAC_LEN + 4 + self.body.len());
        out.push(ACCESS_RECORD_VERSION);
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

    /// Authenticates (both MACs of version 2, the one MAC of version 1) and decodes a stored
    /// record.
    ///
    /// # Errors
    /// As [`FamilyRecord::decode`].
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
        Ok(AccessStatus {
            key_id,
            revoked,
            family,
            issued_at,
            deadline: key.deadline,
            body: if with_body {
                sealed.to_vec()
            } else {
                Vec::new()
            },
        })
    }

    fn decode_v2(bytes: &[u8], key: &AccessKey, keys: &KeyRing) -> Result<Self, CoreError> {
        let record_key = key.to_bytes();
        let (key_id, mut r, mut tail) = verify(
            keys,
            RecordTable::Tokens,
            &record_key,
            bytes,
            (ACCESS_RECORD_VERSION, ACCESS_V2_HEADER_LEN),
        )?;
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
            body: tail.bytes32()?.to_vec(),
        };
        r.finish()?;
        tail.finish()?;
        Ok(rec)
    }

    /// Version 1: `version ‖ key id ‖ state (10) ‖ family flag (1) ‖ family id (16) ‖ subject
    /// hash ‖ client hash ‖ issued at (8) ‖ deadline (8) ‖ MAC ‖ body`, one MAC over the access
    /// key and the header (two BLAKE3 blocks).
    fn decode_v1(bytes: &[u8], key: &AccessKey, keys: &KeyRing) -> Result<Self, CoreError> {
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
        };
        r.finish()?;
        tail.finish()?;
        if rec.deadline != key.deadline {
            return Err(CoreError::BadField("deadline differs from the token's"));
        }
        Ok(rec)
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
            // version (1) ‖ key id (4) ‖ state (1) ‖ family id (16, zeros when standalone)
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

#[cfg(test)]
mod tests;
