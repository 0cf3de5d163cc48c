//! Decoders fed arbitrary bytes: the token wire format and the on-disk record codec.
//!
//! Arbitrary bytes almost never carry a valid record MAC or AEAD tag, so a fuzzer that only fed
//! them to `decode` would never get past authentication. [`check_record_codec`] therefore also
//! *signs* the fuzz input with the test key ring before decoding it, and *seals* it as a body
//! and as a grace slot, so the field parsers behind authentication see arbitrary bytes too. The
//! MAC input and AAD layouts are mirrored from `tokendb-core/src/record/`;
//! [`check_mirror_is_current`] proves the mirror still matches.

use super::{Input, ensure};
use tokendb_core::seal::{KeyId, MAC_LEN, MacDomain};
use tokendb_core::{
    AccessKey, AccessRecord, AccessToken, FamilyId, FamilyRecord, IndexHash, KeyRing, MasterKey,
    ParsedToken, RecordBody, RecordState, RefreshToken, RevokeReason, Scope, TokenFormat, TokenId,
    TokenSecret, WrappedKey,
};

/// The fixed key ring the codec checks sign and seal with.
#[must_use]
pub fn test_ring() -> KeyRing {
    KeyRing::from_fixed_bytes_for_tests([1; 32], [2; 32], [3; 32], [4; 32])
}

const REASONS: [RevokeReason; 6] = [
    RevokeReason::Requested,
    RevokeReason::Subject,
    RevokeReason::Client,
    RevokeReason::ReuseDetected,
    RevokeReason::Evicted,
    RevokeReason::Family,
];

/// Token parsing: no input panics; whatever parses re-encodes to exactly the input (one token,
/// one spelling); tokens built from the input round-trip; any single-character change of a
/// valid token is refused. Also feeds the input to the other text parsers a caller can reach
/// (scope, master-key text, family-id hex, token prefix).
///
/// # Errors
/// A description of the first broken property.
pub fn check_token_parse(data: &[u8]) -> Result<(), String> {
    let keys = test_ring();
    let text = String::from_utf8_lossy(data);
    let tdb = TokenFormat::default();
    let acme = TokenFormat::new("acme2").map_err(|e| e.to_string())?;
    for f in [&tdb, &acme] {
        for candidate in [
            text.to_string(),
            format!("{}_rt_{text}", f.prefix()),
            format!("{}_at_{text}", f.prefix()),
        ] {
            if let Ok(parsed) = f.parse(&candidate) {
                let again = match &parsed {
                    ParsedToken::Refresh(t) => f.encode_refresh(t),
                    ParsedToken::Access(t) => f.encode_access(t),
                };
                ensure!(
                    again.expose() == candidate,
                    "parsed token does not re-encode to its input: {candidate:?}"
                );
            }
        }
    }

    // Structured round trip of tokens built from the input.
    let mut input = Input::new(data);
    let f = if input.byte() & 1 == 1 { &acme } else { &tdb };
    let family = FamilyId::from_bytes(input.array());
    let generation = input.u64();
    let secret: [u8; 32] = input.array();
    let forge_tag = input.byte() & 1 == 1;
    let mut rt =
        RefreshToken::with_secret(&keys, family, generation, TokenSecret::from_bytes(secret));
    if forge_tag {
        rt.tag = input.array();
    }
    let wire = f.encode_refresh(&rt);
    ensure!(
        wire.expose().len() <= f.max_len(),
        "refresh token longer than max_len"
    );
    match f.parse(wire.expose()) {
        Ok(ParsedToken::Refresh(back)) => {
            ensure!(back.family == family, "family changed in round trip");
            ensure!(
                back.generation == generation,
                "generation changed in round trip"
            );
            ensure!(
                back.secret.ct_eq(&rt.secret),
                "secret changed in round trip"
            );
            ensure!(back.tag == rt.tag, "tag changed in round trip");
            let genuine = keys.refresh_tag(&family, generation, &rt.secret) == rt.tag;
            ensure!(
                back.tag_is_valid(&keys) == genuine,
                "tag validity changed in round trip"
            );
            ensure!(f.encode_refresh(&back) == wire, "refresh re-encode differs");
        }
        other => return Err(format!("own refresh token did not parse: {other:?}")),
    }
    let at = AccessToken {
        deadline: u64::from_be_bytes(*secret.first_chunk().unwrap_or(&[0; 8])),
        secret: TokenSecret::from_bytes(secret),
    };
    let at_wire = f.encode_access(&at);
    match f.parse(at_wire.expose()) {
        Ok(ParsedToken::Access(back)) => {
            ensure!(
                back.secret.ct_eq(&at.secret) && back.deadline == at.deadline,
                "access secret or deadline changed in round trip"
            );
        }
        other => return Err(format!("own access token did not parse: {other:?}")),
    }

    // Any one-character change of a valid token is refused (or, if the new character decodes
    // to the same bytes, which base64url's canonical check forbids, is the same token).
    for wire in [wire.expose(), at_wire.expose()] {
        let chars: Vec<char> = wire.chars().collect();
        let pos = usize::from(input.byte()) % chars.len().max(1);
        let c = char::from(input.byte());
        let changed: String = chars
            .iter()
            .enumerate()
            .map(|(i, old)| if i == pos { c } else { *old })
            .collect();
        if changed != wire {
            ensure!(
                f.parse(&changed).is_err(),
                "one-character change accepted: {changed:?}"
            );
        }
        // Truncation anywhere is refused.
        let cut = usize::from(input.byte()) % wire.len().max(1);
        ensure!(
            wire.get(..cut).is_none_or(|t| f.parse(t).is_err()),
            "truncated token accepted"
        );
    }

    // Other text parsers a caller can reach.
    if let Ok(s) = Scope::parse(&text) {
        let canonical = s.to_string();
        ensure!(
            Scope::parse(&canonical).as_ref() == Ok(&s),
            "scope does not round-trip through its canonical form: {canonical:?}"
        );
        ensure!(
            canonical.len() <= text.len(),
            "canonical scope longer than its input"
        );
    }
    let _ = MasterKey::from_text(&text);
    if let Some(id) = FamilyId::from_hex(&text) {
        ensure!(
            FamilyId::from_hex(&id.to_string()) == Some(id),
            "family id hex does not round-trip"
        );
    }
    if let Ok(f) = TokenFormat::new(&text) {
        ensure!(f.prefix() == text, "token prefix changed");
    }
    Ok(())
}

// ---- mirrors of tokendb-core/src/record/, for signing and sealing fuzz input ----

const FAMILIES_TABLE: u8 = 1;
const TOKENS_TABLE: u8 = 2;

/// `header ‖ MAC(record key ‖ header)`: the authenticated prefix of a record.
fn sign(
    keys: &KeyRing,
    domain: MacDomain,
    record_key: &[u8],
    header: &[u8],
) -> Result<Vec<u8>, String> {
    let key = keys.sealing(KeyId(1)).map_err(|e| e.to_string())?;
    let mut out = header.to_vec();
    out.extend_from_slice(&key.mac(domain, &[record_key, header]));
    Ok(out)
}

fn body_aad(table: u8, record_key: &[u8]) -> Vec<u8> {
    let mut aad = b"tokendb/body/v1\0".to_vec();
    aad.push(table);
    aad.extend_from_slice(record_key);
    aad.extend_from_slice(&1u32.to_be_bytes());
    aad
}

fn grace_aad(family: &FamilyId, generation: u64) -> Vec<u8> {
    let mut aad = b"tokendb/grace/v1\0".to_vec();
    aad.extend_from_slice(family.as_bytes());
    aad.extend_from_slice(&generation.to_be_bytes());
    aad
}

fn seal(keys: &KeyRing, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
    Ok(keys
        .sealing(KeyId(1))
        .map_err(|e| e.to_string())?
        .seal(aad, plaintext))
}

/// No sender constraint, a DPoP key's or a certificate's thumbprint, from the input.
fn confirmation_from(input: &mut Input<'_>) -> Option<tokendb_core::Confirmation> {
    match input.byte() % 3 {
        0 => None,
        1 => Some(tokendb_core::Confirmation::Jkt(input.array())),
        _ => Some(tokendb_core::Confirmation::X5tS256(input.array())),
    }
}

/// A family record with every field zero or empty.
fn blank_family() -> FamilyRecord {
    FamilyRecord {
        key_id: KeyId(1),
        state: RecordState::Active,
        created_at: 0,
        absolute_deadline: 0,
        idle_deadline: 0,
        generation: 0,
        rotated_at: 0,
        current: TokenId::from_bytes([0; 32]),
        subject: IndexHash::from_bytes([0; 16]),
        client: IndexHash::from_bytes([0; 16]),
        grace: Vec::new(),
        body: Vec::new(),
        confirmation: None,
    }
}

/// The access key the codec checks store records under: token id 9…9 at `deadline`.
fn akey(deadline: u64) -> AccessKey {
    AccessKey {
        deadline,
        id: TokenId::from_bytes([9; 32]),
    }
}

fn blank_access() -> AccessRecord {
    AccessRecord {
        key_id: KeyId(1),
        state: RecordState::Active,
        family: None,
        subject: IndexHash::from_bytes([0; 16]),
        client: IndexHash::from_bytes([0; 16]),
        issued_at: 0,
        deadline: 0,
        body: Vec::new(),
        confirmation: None,
    }
}

/// A version 1 access record's header (the format before the status MAC; still read):
/// version, key id, state (10), family flag and id (17), subject and client hashes, issued at,
/// deadline.
const ACCESS_V1_HEADER: usize = 1 + 4 + 10 + 17 + 16 + 16 + 8 + 8;
/// A version 2 access record's status block (state, family id, issue time), after the version
/// and key id; its MAC binds all but the last byte of the access key.
const STATUS_BLOCK: usize = 1 + 16 + 8;
const STATUS_KEY: usize = 39;

/// Header lengths `(family, access)`, read off encoded blank records: a family ends in a
/// 16-byte MAC, an empty grace slot (u16 length) and an empty body (u32 length); an access
/// record (version 2) in the record MAC and an empty body.
fn header_lens(keys: &KeyRing) -> Result<(usize, usize), String> {
    let f = blank_family()
        .encode(&FamilyId::from_bytes([7; 16]), keys)
        .map_err(|e| e.to_string())?;
    let a = blank_access()
        .encode(&akey(0), keys)
        .map_err(|e| e.to_string())?;
    Ok((
        f.len().saturating_sub(MAC_LEN + 6),
        a.len().saturating_sub(MAC_LEN + 4),
    ))
}

/// Proves the mirrored MAC and AAD layouts above still match the codec: a record signed here
/// equals the encoder's, and a body and grace slot sealed here open.
///
/// # Errors
/// A description of the layout that drifted.
pub fn check_mirror_is_current() -> Result<(), String> {
    let keys = test_ring();
    let id = FamilyId::from_bytes([7; 16]);
    let (family_header, access_header) = header_lens(&keys)?;
    let mut rec = blank_family();
    rec.created_at = 42;
    let mut pt = Vec::new();
    for part in [b"alice".as_slice(), b"web", b"openid"] {
        pt.extend_from_slice(
            &u16::try_from(part.len())
                .map_err(|e| e.to_string())?
                .to_be_bytes(),
        );
        pt.extend_from_slice(part);
    }
    pt.extend_from_slice(&2u32.to_be_bytes());
    pt.extend_from_slice(b"{}");
    rec.body = seal(&keys, &body_aad(FAMILIES_TABLE, id.as_bytes()), &pt)?;
    rec.grace = seal(&keys, &grace_aad(&id, 0), &[5; 32])?;
    let encoded = rec.encode(&id, &keys).map_err(|e| e.to_string())?;
    let header = encoded.get(..family_header).unwrap_or_default();
    let signed = sign(&keys, MacDomain::Families, id.as_bytes(), header)?;
    ensure!(
        encoded.starts_with(&signed),
        "family record MAC layout drifted"
    );
    let body = rec
        .open_body(&id, &keys)
        .map_err(|e| format!("body AAD layout drifted: {e}"))?;
    ensure!(
        body.subject == "alice" && body.claims == b"{}",
        "body encoding drifted"
    );
    let grace = rec
        .grace_secret(&id, &keys)
        .map_err(|e| format!("grace AAD drifted: {e}"))?;
    ensure!(
        grace.is_some_and(|s| s.expose() == &[5; 32]),
        "grace slot drifted"
    );
    let tid = akey(42);
    let mut arec = blank_access();
    arec.deadline = 42;
    arec.body = seal(&keys, &body_aad(TOKENS_TABLE, &tid.to_bytes()), &pt)?;
    arec.open_body(&tid, &keys)
        .map_err(|e| format!("token body AAD drifted: {e}"))?;
    let encoded = arec.encode(&tid, &keys).map_err(|e| e.to_string())?;
    let header = encoded.get(..access_header).unwrap_or_default();
    let signed = sign(&keys, MacDomain::Tokens, &tid.to_bytes(), header)?;
    ensure!(
        encoded.starts_with(&signed),
        "access record MAC layout drifted"
    );
    let block = encoded.get(5..5 + STATUS_BLOCK).unwrap_or_default();
    let status = sign(
        &keys,
        MacDomain::TokenStatus,
        tid.to_bytes().get(..STATUS_KEY).unwrap_or_default(),
        block,
    )?;
    ensure!(
        encoded.get(5..5 + STATUS_BLOCK + MAC_LEN) == Some(&status[..]),
        "access record status MAC layout drifted"
    );
    ensure!(
        access_v2(
            &keys,
            &tid,
            block,
            header.get(5 + STATUS_BLOCK + MAC_LEN..).unwrap_or_default()
        )? == header,
        "access record header layout drifted"
    );
    Ok(())
}

/// `version 2 ‖ key id 1 ‖ status block ‖ status MAC ‖ details`: a version 2 access record's
/// header, with the status MAC made here. `block` and `details` are cut or zero-padded to their
/// sizes (25 and 40 bytes).
fn access_v2(
    keys: &KeyRing,
    key: &AccessKey,
    block: &[u8],
    details: &[u8],
) -> Result<Vec<u8>, String> {
    let mut block = block.to_vec();
    block.resize(STATUS_BLOCK, 0);
    let mut header = vec![2u8, 0, 0, 0, 1];
    header.extend_from_slice(&sign(
        keys,
        MacDomain::TokenStatus,
        key.to_bytes().get(..STATUS_KEY).unwrap_or_default(),
        &block,
    )?);
    let mut details = details.to_vec();
    details.resize(8 + 16 + 16, 0);
    header.extend_from_slice(&details);
    Ok(header)
}

/// What every access record that fully decodes must also satisfy: its status decode (the
/// validation path) agrees with it, its unauthenticated family link agrees with it, and its body
/// opens or is refused without a panic.
fn check_access_decodes(
    keys: &KeyRing,
    bytes: &[u8],
    key: &AccessKey,
    rec: &AccessRecord,
) -> Result<(), String> {
    let status = AccessRecord::decode_status_and_body(bytes, key, keys)
        .map_err(|e| format!("a record that decodes failed its status decode: {e}"))?;
    ensure!(
        status.body == rec.body
            && tokendb_core::AccessStatus {
                body: Vec::new(),
                ..status
            } == rec.status(),
        "status decode disagrees with the full decode"
    );
    ensure!(
        AccessRecord::family_link(bytes) == rec.family,
        "family link disagrees with the full decode"
    );
    let _ = rec.open_body(key, keys);
    Ok(())
}

/// `version 1 ‖ key id 1 ‖ input`, cut or zero-padded to `len`, then the rest of the input.
fn header_and_tail(data: &[u8], len: usize) -> (Vec<u8>, &[u8]) {
    let mut header = vec![1u8, 0, 0, 0, 1];
    let (head, tail) = data.split_at(len.saturating_sub(5).min(data.len()));
    header.extend_from_slice(head);
    header.resize(len, 0);
    (header, tail)
}

fn state_from(input: &mut Input<'_>) -> RecordState {
    let b = input.byte();
    if b & 1 == 0 {
        RecordState::Active
    } else {
        RecordState::Revoked {
            reason: REASONS
                .get(usize::from(b >> 1) % REASONS.len())
                .copied()
                .unwrap_or(RevokeReason::Requested),
            at: input.u64(),
        }
    }
}

fn text_from(input: &mut Input<'_>, max: usize) -> String {
    let n = usize::from(input.byte()) % max.max(1);
    String::from_utf8_lossy(input.bytes(n)).into_owned()
}

/// The record codec: arbitrary bytes through `FamilyRecord::decode`, `AccessRecord::decode`,
/// `WrappedKey::decode`, `open_body` and `grace_secret` never panic (raw, and signed or sealed
/// so the parsers behind authentication run); what decodes re-encodes to the same bytes; records
/// and bodies built from the input round-trip through encode → decode and seal → open.
///
/// # Errors
/// A description of the first broken property.
pub fn check_record_codec(data: &[u8]) -> Result<(), String> {
    let keys = test_ring();
    let fid = FamilyId::from_bytes([7; 16]);
    let tid = akey(0);

    // a) raw bytes: authentication refuses them; nothing panics.
    let _ = FamilyRecord::decode(data, &fid, &keys);
    let _ = AccessRecord::decode(data, &tid, &keys);
    let _ = AccessRecord::decode_status_and_body(data, &tid, &keys);
    let _ = AccessRecord::family_link(data);
    if let Ok(w) = WrappedKey::decode(data) {
        ensure!(
            w.encode() == data,
            "wrapped key does not re-encode to its input"
        );
        let _ = KeyRing::unwrap_all(&MasterKey::from_bytes([0; 32]), &[w], KeyId(1));
    }

    // b) signed bytes: version 1 and key id 1, then the input as the header under a valid
    // MAC, and the rest of the input as the unauthenticated tail (grace slot and body).
    let (family_header, _) = header_lens(&keys)?;
    let (header, tail) = header_and_tail(data, family_header);
    let mut signed = sign(&keys, MacDomain::Families, fid.as_bytes(), &header)?;
    signed.extend_from_slice(tail);
    if let Ok(rec) = FamilyRecord::decode(&signed, &fid, &keys) {
        let again = rec.encode(&fid, &keys).map_err(|e| e.to_string())?;
        ensure!(
            again == signed,
            "family record does not re-encode to its input"
        );
        let _ = rec.open_body(&fid, &keys);
        let _ = rec.grace_secret(&fid, &keys);
    }
    // The same header signed for the other table must not decode.
    let mut moved = sign(&keys, MacDomain::Tokens, fid.as_bytes(), &header)?;
    moved.extend_from_slice(tail);
    ensure!(
        FamilyRecord::decode(&moved, &fid, &keys).is_err(),
        "a record signed for another table decoded"
    );
    // Version 1 access records (still read, no longer written).
    let (header, tail) = header_and_tail(data, ACCESS_V1_HEADER);
    // Stored under the deadline the header names (the header's last 8 bytes), so that the
    // deadline check does not hide the rest of the decoder.
    let named = header
        .last_chunk::<8>()
        .map_or(0, |d| u64::from_be_bytes(*d));
    let signed_key = akey(named);
    let mut signed = sign(&keys, MacDomain::Tokens, &signed_key.to_bytes(), &header)?;
    signed.extend_from_slice(tail);
    if let Ok(rec) = AccessRecord::decode(&signed, &signed_key, &keys) {
        check_access_decodes(&keys, &signed, &signed_key, &rec)?;
        // Rewritten, it becomes version 2 and reads back the same (if version 2 can hold it).
        if let Ok(again) = rec.encode(&signed_key, &keys) {
            ensure!(
                AccessRecord::decode(&again, &signed_key, &keys).as_ref() == Ok(&rec),
                "a version 1 record changed when rewritten"
            );
        }
        ensure!(
            AccessRecord::decode(&signed, &akey(named.wrapping_add(1)), &keys).is_err(),
            "an access record decoded under another deadline"
        );
    }
    // Version 2: the input as status block and details, both MACs valid, under a deadline the
    // input names.
    let mut input = Input::new(data);
    let v2_key = akey(input.u64());
    let block = input.bytes(STATUS_BLOCK).to_vec();
    let details = input.bytes(40).to_vec();
    let header = access_v2(&keys, &v2_key, &block, &details)?;
    let mut signed = sign(&keys, MacDomain::Tokens, &v2_key.to_bytes(), &header)?;
    signed.extend_from_slice(input.rest());
    let _ = AccessRecord::decode_status_and_body(&signed, &v2_key, &keys);
    if let Ok(rec) = AccessRecord::decode(&signed, &v2_key, &keys) {
        check_access_decodes(&keys, &signed, &v2_key, &rec)?;
        let again = rec.encode(&v2_key, &keys).map_err(|e| e.to_string())?;
        ensure!(
            again == signed,
            "access record does not re-encode to its input"
        );
        let moved = AccessKey {
            deadline: v2_key.deadline.wrapping_add(1),
            ..v2_key
        };
        ensure!(
            AccessRecord::decode_status(&signed, &moved, &keys).is_err(),
            "an access record's status decoded under another deadline"
        );
    }

    // c) sealed bytes: the input as a body plaintext and as a grace slot.
    let mut rec = blank_family();
    rec.body = seal(&keys, &body_aad(FAMILIES_TABLE, fid.as_bytes()), data)?;
    rec.grace = seal(&keys, &grace_aad(&fid, 0), data)?;
    if let Ok(body) = rec.open_body(&fid, &keys)
        && body.validate().is_ok()
    {
        let (_, resealed) = FamilyRecord::seal_body(&keys, &fid, &body)
            .map_err(|e| format!("an opened body does not seal again: {e}"))?;
        let mut again = blank_family();
        again.body = resealed;
        ensure!(
            again.open_body(&fid, &keys).as_ref() == Ok(&body),
            "an opened body does not round-trip"
        );
    }
    match rec.grace_secret(&fid, &keys) {
        Ok(Some(s)) => ensure!(s.expose().as_slice() == data, "grace secret altered"),
        Ok(None) => return Err("a sealed grace slot reads as empty".into()),
        Err(_) => ensure!(
            data.len() != 32,
            "a sealed 32-byte grace secret did not open"
        ),
    }
    let mut atok = blank_access();
    atok.body = seal(&keys, &body_aad(TOKENS_TABLE, &tid.to_bytes()), data)?;
    let _ = atok.open_body(&tid, &keys);

    // d) records and bodies built from the input round-trip.
    let mut input = Input::new(data);
    let body = RecordBody {
        subject: text_from(&mut input, 64),
        client_id: text_from(&mut input, 32),
        scope: Scope::parse(&text_from(&mut input, 64)).unwrap_or_default(),
        claims: {
            let n = usize::from(input.byte());
            input.bytes(n).to_vec()
        },
    };
    match FamilyRecord::seal_body(&keys, &fid, &body) {
        Ok((key_id, sealed)) => {
            ensure!(
                body.validate().is_ok(),
                "a body breaking the limits was sealed"
            );
            let rec = FamilyRecord {
                key_id,
                state: state_from(&mut input),
                created_at: input.u64(),
                absolute_deadline: input.u64(),
                idle_deadline: input.u64(),
                generation: input.u64(),
                rotated_at: input.u64(),
                current: TokenId::from_bytes(input.array()),
                subject: IndexHash::from_bytes(input.array()),
                client: IndexHash::from_bytes(input.array()),
                grace: Vec::new(),
                body: sealed,
                confirmation: confirmation_from(&mut input),
            };
            let mut rec = rec;
            if input.byte() & 1 == 1 {
                rec.set_grace(&fid, &keys, &TokenSecret::from_bytes(input.array()))
                    .map_err(|e| e.to_string())?;
            }
            let bytes = rec.encode(&fid, &keys).map_err(|e| e.to_string())?;
            let back = FamilyRecord::decode(&bytes, &fid, &keys).map_err(|e| e.to_string())?;
            ensure!(back == rec, "family record changed in round trip");
            ensure!(
                back.open_body(&fid, &keys).as_ref() == Ok(&body),
                "body changed"
            );
            // The record does not decode under another id or as an access record.
            let other = FamilyId::from_bytes([8; 16]);
            ensure!(
                FamilyRecord::decode(&bytes, &other, &keys).is_err(),
                "a family record decoded under another id"
            );
            // Any one flipped bit is refused: by the header MAC, or, in the sealed tail, when
            // the part it hit is opened.
            let bit = usize::try_from(input.u32()).unwrap_or(0) % (bytes.len() * 8).max(1);
            let mut flipped = bytes.clone();
            if let Some(b) = flipped.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
            if let Ok(r) = FamilyRecord::decode(&flipped, &fid, &keys) {
                let mut header = r.clone();
                header.grace.clone_from(&rec.grace);
                header.body.clone_from(&rec.body);
                ensure!(
                    header == rec,
                    "bit {bit} flipped changed an authenticated field"
                );
                ensure!(
                    r.open_body(&fid, &keys).is_err() || r.body == rec.body,
                    "bit {bit} flipped: an altered body opened"
                );
                let old = rec.grace_secret(&fid, &keys).map_err(|e| e.to_string())?;
                match r.grace_secret(&fid, &keys) {
                    Err(_) => {}
                    Ok(None) => ensure!(old.is_none(), "bit {bit} flipped: grace slot vanished"),
                    Ok(Some(s)) => ensure!(
                        old.is_some_and(|o| o.ct_eq(&s)),
                        "bit {bit} flipped: an altered grace slot opened"
                    ),
                }
            }

            let tid = akey(input.u64());
            let (key_id, sealed) =
                AccessRecord::seal_body(&keys, &tid, &body).map_err(|e| e.to_string())?;
            let family = if input.byte() & 1 == 1 {
                Some(FamilyId::from_bytes(input.array()))
            } else {
                None
            };
            let arec = AccessRecord {
                key_id,
                state: state_from(&mut input),
                family,
                subject: IndexHash::from_bytes(input.array()),
                client: IndexHash::from_bytes(input.array()),
                issued_at: input.u64(),
                deadline: tid.deadline,
                body: sealed,
                confirmation: confirmation_from(&mut input),
            };
            if arec.family == Some(FamilyId::from_bytes([0; 16])) {
                // The format reserves a family id of zeros for "standalone"; a real one is
                // random and never zero, and encoding refuses it rather than write it as none.
                ensure!(
                    arec.encode(&tid, &keys).is_err(),
                    "a family id of zeros was encoded"
                );
                let _ = input.rest();
                return Ok(());
            }
            let bytes = arec.encode(&tid, &keys).map_err(|e| e.to_string())?;
            let back = AccessRecord::decode(&bytes, &tid, &keys).map_err(|e| e.to_string())?;
            ensure!(back == arec, "access record changed in round trip");
            ensure!(
                back.open_body(&tid, &keys).as_ref() == Ok(&body),
                "token body changed"
            );
            ensure!(
                FamilyRecord::decode(&bytes, &fid, &keys).is_err(),
                "an access record decoded as a family"
            );
        }
        Err(_) => ensure!(body.validate().is_err(), "a valid body failed to seal"),
    }
    let _ = input.rest();
    Ok(())
}
