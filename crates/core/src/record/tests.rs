use super::access::v2::{ACCESS_V2_HEADER_LEN, STATUS_AT, STATUS_LEN};
use super::*;
use crate::CoreError;
use crate::confirm::Confirmation;
use crate::ids::{ACCESS_KEY_LEN, AccessKey, FamilyId, TokenId};
use crate::keys::KeyRing;
use crate::scope::Scope;
use crate::seal::MAC_LEN;
use crate::secret::TokenSecret;

fn ring() -> KeyRing {
    KeyRing::from_fixed_bytes_for_tests([1; 32], [2; 32], [3; 32], [4; 32])
}

fn body() -> RecordBody {
    RecordBody {
        subject: "alice@example.com".into(),
        client_id: "demo-client".into(),
        scope: Scope::parse("openid offline_access").unwrap(),
        claims: b"{\"acr\":\"mfa\"}".to_vec(),
    }
}

fn family(keys: &KeyRing, id: &FamilyId) -> FamilyRecord {
    let (key_id, sealed) = FamilyRecord::seal_body(keys, id, &body()).unwrap();
    let mut rec = FamilyRecord {
        key_id,
        state: RecordState::Active,
        created_at: 1_000,
        absolute_deadline: 90_000,
        idle_deadline: 14_000,
        generation: 3,
        rotated_at: 2_000,
        current: TokenId::from_bytes([8; 32]),
        subject: keys.subject_hash("alice@example.com"),
        client: keys.client_hash("demo-client"),
        grace: Vec::new(),
        body: sealed,
        confirmation: None,
    };
    rec.set_grace(id, keys, &TokenSecret::from_bytes([5; 32]))
        .unwrap();
    rec
}

fn akey(b: u8) -> AccessKey {
    AccessKey {
        deadline: 3_600_010,
        id: TokenId::from_bytes([b; 32]),
    }
}

fn access(keys: &KeyRing, id: &AccessKey) -> AccessRecord {
    let (key_id, sealed) = AccessRecord::seal_body(keys, id, &body()).unwrap();
    AccessRecord {
        key_id,
        state: RecordState::Revoked {
            reason: RevokeReason::Family,
            at: 5,
        },
        family: Some(FamilyId::from_bytes([6; 16])),
        subject: keys.subject_hash("alice@example.com"),
        client: keys.client_hash("demo-client"),
        issued_at: 10,
        deadline: 3_600_010,
        body: sealed,
        confirmation: None,
    }
}

/// A DPoP key thumbprint (RFC 7638 §3.1's example).
fn jkt() -> Confirmation {
    Confirmation::jkt_from_base64url("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs").unwrap()
}

fn bound_family(keys: &KeyRing, id: &FamilyId) -> FamilyRecord {
    FamilyRecord {
        confirmation: Some(jkt()),
        ..family(keys, id)
    }
}

fn bound_access(keys: &KeyRing, id: &AccessKey) -> AccessRecord {
    AccessRecord {
        confirmation: Some(Confirmation::X5tS256([0xc5; 32])),
        ..access(keys, id)
    }
}

#[test]
fn family_round_trip() {
    let keys = ring();
    let id = FamilyId::from_bytes([7; 16]);
    let rec = family(&keys, &id);
    let bytes = rec.encode(&id, &keys).unwrap();
    let back = FamilyRecord::decode(&bytes, &id, &keys).unwrap();
    assert_eq!(back, rec);
    assert_eq!(back.open_body(&id, &keys).unwrap(), body());
    assert_eq!(
        back.grace_secret(&id, &keys).unwrap().unwrap().expose(),
        &[5; 32]
    );
    assert_eq!(back.deadline(), 14_000);
}

#[test]
fn access_round_trip() {
    let keys = ring();
    let id = akey(9);
    let rec = access(&keys, &id);
    let bytes = rec.encode(&id, &keys).unwrap();
    let back = AccessRecord::decode(&bytes, &id, &keys).unwrap();
    assert_eq!(back, rec);
    assert_eq!(back.open_body(&id, &keys).unwrap(), body());
}

/// Every single-bit flip anywhere in a record is refused: in the header by the MAC at decode,
/// in a sealed part by its AEAD when opened (or by the length checks at decode).
#[test]
fn every_single_bit_flip_is_rejected() {
    let keys = ring();
    let fid = FamilyId::from_bytes([7; 16]);
    let fam = family(&keys, &fid).encode(&fid, &keys).unwrap();
    for i in 0..fam.len() * 8 {
        let mut bad = fam.clone();
        bad[i / 8] ^= 1 << (i % 8);
        let refused = match FamilyRecord::decode(&bad, &fid, &keys) {
            Err(_) => true,
            Ok(rec) => {
                rec.open_body(&fid, &keys).is_err() || rec.grace_secret(&fid, &keys).is_err()
            }
        };
        assert!(refused, "family bit {i}");
    }
    let tid = akey(9);
    let tok = access(&keys, &tid).encode(&tid, &keys).unwrap();
    for i in 0..tok.len() * 8 {
        let mut bad = tok.clone();
        bad[i / 8] ^= 1 << (i % 8);
        let refused = match AccessRecord::decode(&bad, &tid, &keys) {
            Err(_) => true,
            Ok(rec) => rec.open_body(&tid, &keys).is_err(),
        };
        assert!(refused, "token bit {i}");
    }
    for n in 0..tok.len() {
        assert!(
            AccessRecord::decode(&tok[..n], &tid, &keys).is_err(),
            "truncated to {n}"
        );
    }
}

#[test]
fn records_cannot_move_or_swap_bodies() {
    let keys = ring();
    let a = akey(1);
    let b = akey(2);
    let rec_a = access(&keys, &a);
    let bytes_a = rec_a.encode(&a, &keys).unwrap();
    // Stored under another key: the MAC binds the record key.
    assert_eq!(
        AccessRecord::decode(&bytes_a, &b, &keys),
        Err(CoreError::Unauthentic)
    );
    // A body sealed for A, re-framed with a valid MAC for B (an attacker who had the MAC key but
    // not the sealing key could not do this; even so the AEAD refuses it).
    let moved = AccessRecord {
        body: rec_a.body.clone(),
        ..access(&keys, &b)
    };
    let moved = AccessRecord::decode(&moved.encode(&b, &keys).unwrap(), &b, &keys).unwrap();
    assert_eq!(moved.open_body(&b, &keys), Err(CoreError::Unauthentic));
    // Another database's keys refuse it.
    let other = KeyRing::generate();
    assert!(AccessRecord::decode(&bytes_a, &a, &other).is_err());
}

#[test]
fn unknown_version_and_key_are_named() {
    let keys = ring();
    let id = akey(9);
    let mut bytes = access(&keys, &id).encode(&id, &keys).unwrap();
    bytes[0] = 4;
    assert_eq!(
        AccessRecord::decode(&bytes, &id, &keys),
        Err(CoreError::UnsupportedVersion(4))
    );
    assert_eq!(
        AccessRecord::decode_status(&bytes, &id, &keys),
        Err(CoreError::UnsupportedVersion(4))
    );
    bytes[0] = ACCESS_RECORD_VERSION;
    bytes[4] = 9;
    assert_eq!(
        AccessRecord::decode(&bytes, &id, &keys),
        Err(CoreError::UnknownKeyId(9))
    );
    assert_eq!(
        AccessRecord::decode_status(&bytes, &id, &keys),
        Err(CoreError::UnknownKeyId(9))
    );
    let mut fam = family(&keys, &FamilyId::from_bytes([7; 16]))
        .encode(&FamilyId::from_bytes([7; 16]), &keys)
        .unwrap();
    fam[0] = 3;
    assert_eq!(
        FamilyRecord::decode(&fam, &FamilyId::from_bytes([7; 16]), &keys),
        Err(CoreError::UnsupportedVersion(3))
    );
    // A version 1 record relabelled as version 2 (or back) does not authenticate.
    fam[0] = 2;
    assert!(FamilyRecord::decode(&fam, &FamilyId::from_bytes([7; 16]), &keys).is_err());
    let mut tok = access(&keys, &id).encode(&id, &keys).unwrap();
    tok[0] = BOUND_ACCESS_RECORD_VERSION;
    assert!(AccessRecord::decode(&tok, &id, &keys).is_err());
    assert!(AccessRecord::decode_status(&tok, &id, &keys).is_err());
}

#[test]
fn limits_are_enforced() {
    let keys = ring();
    let id = akey(9);
    let mut b = body();
    b.claims = vec![0; MAX_CLAIMS_LEN + 1];
    assert!(matches!(
        AccessRecord::seal_body(&keys, &id, &b),
        Err(CoreError::TooLarge { what: "claims", .. })
    ));
    let mut b = body();
    b.subject = "a".repeat(MAX_SUBJECT_LEN + 1);
    assert!(matches!(
        AccessRecord::seal_body(&keys, &id, &b),
        Err(CoreError::TooLarge {
            what: "subject",
            ..
        })
    ));
    let mut b = body();
    b.client_id = String::new();
    assert!(matches!(
        AccessRecord::seal_body(&keys, &id, &b),
        Err(CoreError::BadText(_))
    ));
    let mut b = body();
    b.subject = "bob\u{0}".into();
    assert!(matches!(
        AccessRecord::seal_body(&keys, &id, &b),
        Err(CoreError::BadText(_))
    ));
}

#[test]
fn reseal_moves_records_to_the_new_key() {
    let mut keys = ring();
    let id = FamilyId::from_bytes([7; 16]);
    let mut rec = family(&keys, &id);
    let new = keys.add_sealing_key();
    rec.reseal(&id, &keys).unwrap();
    assert_eq!(rec.key_id, new);
    keys.retire_sealing_key(crate::KeyId(1)).unwrap();
    let back = FamilyRecord::decode(&rec.encode(&id, &keys).unwrap(), &id, &keys).unwrap();
    assert_eq!(back.open_body(&id, &keys).unwrap(), body());
    assert_eq!(
        back.grace_secret(&id, &keys).unwrap().unwrap().expose(),
        &[5; 32]
    );
}

/// Format fixtures, written once and committed: every later build must still read them. Family
/// records are version 1 (unbound) or 2 (bound); access records were version 1, are version 2
/// since the one-block status MAC, and version 3 when bound. Write only a new format version's
/// files, once (`TOKENDB_WRITE_FIXTURES=1` writes `family_v2.bin` and `access_v3.bin`, the
/// newest); the older ones are history and stay as committed.
#[test]
fn format_fixtures_still_decode() {
    let keys = ring();
    let fid = FamilyId::from_bytes([7; 16]);
    let tid = akey(9);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    if std::env::var_os("TOKENDB_WRITE_FIXTURES").is_some() {
        let write = |file: &str, bytes: Vec<u8>| std::fs::write(format!("{dir}/{file}"), bytes);
        write(
            "family_v2.bin",
            bound_family(&keys, &fid).encode(&fid, &keys).unwrap(),
        )
        .unwrap();
        write(
            "access_v3.bin",
            bound_access(&keys, &tid).encode(&tid, &keys).unwrap(),
        )
        .unwrap();
    }
    for (version, file, confirmation) in [
        (1u8, "family_v1.bin", None),
        (2, "family_v2.bin", Some(jkt())),
    ] {
        let fam = std::fs::read(format!("{dir}/{file}")).unwrap();
        assert_eq!(fam[0], version, "{file}");
        let rec = FamilyRecord::decode(&fam, &fid, &keys).unwrap();
        assert_eq!(rec.generation, 3);
        assert_eq!(rec.absolute_deadline, 90_000);
        assert_eq!(rec.confirmation, confirmation, "{file}");
        assert_eq!(rec.open_body(&fid, &keys).unwrap(), body());
        // Rewritten, a family keeps its version and its bytes: an unbound family written
        // before sender constraints existed is stored exactly as it was.
        assert_eq!(rec.encode(&fid, &keys).unwrap(), fam, "{file}");
    }
    for (version, file, confirmation) in [
        (1u8, "access_v1.bin", None),
        (2, "access_v2.bin", None),
        (3, "access_v3.bin", Some(Confirmation::X5tS256([0xc5; 32]))),
    ] {
        let tok = std::fs::read(format!("{dir}/{file}")).unwrap();
        assert_eq!(tok[0], version, "{file}");
        let rec = AccessRecord::decode(&tok, &tid, &keys).unwrap();
        let want = AccessRecord {
            confirmation,
            ..access(&keys, &tid)
        };
        assert_eq!(
            AccessRecord {
                body: Vec::new(),
                ..rec.clone()
            },
            AccessRecord {
                body: Vec::new(),
                ..want.clone()
            },
            "{file}"
        );
        assert_eq!(rec.open_body(&tid, &keys).unwrap(), body(), "{file}");
        let status = AccessRecord::decode_status_and_body(&tok, &tid, &keys).unwrap();
        assert_eq!(status.revoked, Some(RevokeReason::Family), "{file}");
        assert_eq!(status.issued_at, 10, "{file}");
        assert_eq!(status.confirmation, confirmation, "{file}");
        assert_eq!(status.open_body(&tid, &keys).unwrap(), body(), "{file}");
        // Rewriting an old record writes the current version, which reads back the same.
        let again = rec.encode(&tid, &keys).unwrap();
        let current = match confirmation {
            None => ACCESS_RECORD_VERSION,
            Some(_) => BOUND_ACCESS_RECORD_VERSION,
        };
        assert_eq!(again[0], current);
        assert_eq!(AccessRecord::decode(&again, &tid, &keys).unwrap(), rec);
    }
}

/// A bound record keeps its confirmation through encode and decode, and no damaged byte of its
/// header decodes: in particular not a changed thumbprint or kind.
#[test]
fn bound_records_authenticate_their_confirmation() {
    let keys = ring();
    let fid = FamilyId::from_bytes([7; 16]);
    let fam = bound_family(&keys, &fid);
    let bytes = fam.encode(&fid, &keys).unwrap();
    assert_eq!(bytes[0], FAMILY_RECORD_VERSION);
    assert_eq!(FamilyRecord::decode(&bytes, &fid, &keys).unwrap(), fam);
    let header = bytes.len() - fam.body.len() - 4 - fam.grace.len() - 2;
    for i in 0..header * 8 {
        let mut bad = bytes.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            FamilyRecord::decode(&bad, &fid, &keys).is_err(),
            "family bit {i}"
        );
    }
    let tid = akey(9);
    let tok = bound_access(&keys, &tid);
    let bytes = tok.encode(&tid, &keys).unwrap();
    assert_eq!(bytes[0], BOUND_ACCESS_RECORD_VERSION);
    assert_eq!(AccessRecord::decode(&bytes, &tid, &keys).unwrap(), tok);
    let status = AccessRecord::decode_status(&bytes, &tid, &keys).unwrap();
    assert_eq!(status, tok.status());
    assert_eq!(status.confirmation, tok.confirmation);
    let header = bytes.len() - tok.body.len() - 4;
    for i in 0..header * 8 {
        let mut bad = bytes.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(
            AccessRecord::decode_status(&bad, &tid, &keys).is_err(),
            "status of token bit {i}"
        );
        assert!(
            AccessRecord::decode(&bad, &tid, &keys).is_err(),
            "token bit {i}"
        );
    }
    // The confirmation's kind byte is checked: an unknown kind is a bad field, not a guess.
    let mut unknown = bytes.clone();
    let at = ACCESS_V2_HEADER_LEN;
    unknown[at] = 9;
    assert!(AccessRecord::decode(&unknown, &tid, &keys).is_err());
    assert_eq!(AccessRecord::family_link(&bytes), tok.family);
}

#[test]
fn family_link_reads_the_unauthenticated_family_field() {
    let keys = ring();
    let id = akey(9);
    let tied = access(&keys, &id);
    let bytes = tied.encode(&id, &keys).unwrap();
    assert_eq!(AccessRecord::family_link(&bytes), tied.family);
    let alone = AccessRecord {
        family: None,
        ..tied
    };
    assert_eq!(
        AccessRecord::family_link(&alone.encode(&id, &keys).unwrap()),
        None
    );
    assert_eq!(AccessRecord::family_link(&bytes[..20]), None);
    // The record's deadline must be the one its key carries.
    let other = AccessKey {
        deadline: id.deadline + 1,
        ..id
    };
    assert!(alone.encode(&other, &keys).is_err());
    assert!(AccessRecord::decode(&bytes, &other, &keys).is_err());
}

#[test]
fn status_decode_agrees_with_decode_and_no_damage_changes_it() {
    let keys = ring();
    let id = akey(9);
    for rec in [
        access(&keys, &id),
        AccessRecord {
            state: RecordState::Active,
            family: None,
            ..access(&keys, &id)
        },
    ] {
        let bytes = rec.encode(&id, &keys).unwrap();
        let status = AccessRecord::decode_status(&bytes, &id, &keys).unwrap();
        assert_eq!(status, rec.status());
        let with_body = AccessRecord::decode_status_and_body(&bytes, &id, &keys).unwrap();
        assert_eq!(with_body.body, rec.body);
        assert_eq!(with_body.open_body(&id, &keys).unwrap(), body());
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            // What the status MAC covers, and the MAC itself, never decode altered.
            if let Ok(s) = AccessRecord::decode_status(&bad, &id, &keys) {
                assert!(i / 8 >= STATUS_AT + STATUS_LEN + MAC_LEN, "bit {i}");
                assert_eq!(s, status, "bit {i}");
            }
            // The full decode refuses every flip outside the sealed body.
            if i / 8 < ACCESS_V2_HEADER_LEN + MAC_LEN + 4 {
                assert!(AccessRecord::decode(&bad, &id, &keys).is_err(), "bit {i}");
            }
        }
        for n in 0..bytes.len() {
            assert!(AccessRecord::decode_status(&bytes[..n], &id, &keys).is_err());
        }
        // The full decode binds the whole key; the status MAC all but its last byte.
        let mut last = id.to_bytes();
        last[ACCESS_KEY_LEN - 1] ^= 1;
        assert_eq!(
            AccessRecord::decode(&bytes, &AccessKey::from_bytes(&last), &keys),
            Err(CoreError::Unauthentic)
        );
        // Under another key (another id, or the same id at another deadline) nothing decodes.
        for other in [
            akey(8),
            AccessKey {
                deadline: id.deadline + 1,
                ..id
            },
        ] {
            assert_eq!(
                AccessRecord::decode_status(&bytes, &other, &keys),
                Err(CoreError::Unauthentic)
            );
        }
    }
}

#[test]
fn encode_refuses_a_family_id_of_zeros_and_keeps_any_issue_time() {
    let keys = ring();
    let id = akey(9);
    let zero_family = AccessRecord {
        family: Some(FamilyId::from_bytes([0; 16])),
        ..access(&keys, &id)
    };
    assert!(matches!(
        zero_family.encode(&id, &keys),
        Err(CoreError::BadField(_))
    ));
    for issued_at in [0, u64::MAX] {
        let rec = AccessRecord {
            issued_at,
            ..access(&keys, &id)
        };
        let bytes = rec.encode(&id, &keys).unwrap();
        assert_eq!(AccessRecord::decode(&bytes, &id, &keys).unwrap(), rec);
        assert_eq!(
            AccessRecord::decode_status(&bytes, &id, &keys).unwrap(),
            rec.status()
        );
    }
}

/// `decode_status_and_open` (what an introspection reads) answers exactly what
/// `decode_status_and_body` then `open_body` answer, for every stored version (the fixtures and
/// fresh records), opens the body only when asked, and never yields an altered status or body
/// from damaged bytes.
#[test]
fn status_and_open_agrees_with_status_then_open() {
    let keys = ring();
    let id = akey(9);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut stored: Vec<Vec<u8>> = ["access_v1.bin", "access_v2.bin", "access_v3.bin"]
        .iter()
        .map(|f| std::fs::read(format!("{dir}/{f}")).unwrap())
        .collect();
    let active = AccessRecord {
        state: RecordState::Active,
        ..access(&keys, &id)
    };
    stored.push(active.encode(&id, &keys).unwrap());
    stored.push(bound_access(&keys, &id).encode(&id, &keys).unwrap());
    for bytes in &stored {
        let want = AccessRecord::decode_status_and_body(bytes, &id, &keys).unwrap();
        let want_body = want.open_body(&id, &keys).unwrap();
        assert_eq!(want_body, body());
        let want_status = AccessStatus {
            body: Vec::new(),
            ..want
        };
        let (status, opened) =
            AccessRecord::decode_status_and_open(bytes, &id, &keys, |s| *s == want_status).unwrap();
        assert_eq!(status, want_status, "version {}", bytes[0]);
        assert_eq!(opened, Some(want_body), "version {}", bytes[0]);
        let (status, opened) =
            AccessRecord::decode_status_and_open(bytes, &id, &keys, |_| false).unwrap();
        assert_eq!((status, opened), (want_status.clone(), None));
        // Under another key nothing decodes, opened or not.
        assert_eq!(
            AccessRecord::decode_status_and_open(bytes, &akey(8), &keys, |_| true),
            Err(CoreError::Unauthentic)
        );
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            if let Ok((s, b)) = AccessRecord::decode_status_and_open(&bad, &id, &keys, |_| true) {
                assert_eq!(s, want_status, "version {} bit {i}", bytes[0]);
                assert_eq!(b.as_ref(), Some(&body()), "version {} bit {i}", bytes[0]);
            }
        }
    }
}
