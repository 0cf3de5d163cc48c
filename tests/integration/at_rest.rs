//! Promise 1: no token secret, subject, client id, scope or claim in plaintext in the file;
//! promise 7: a wrong master key is refused at open; master-key rotation.

use crate::common::Fixture;
use tokendb::{Config, Error, Grant, MasterKey, StoreError, TokenDb};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

fn b64url_decode(s: &str) -> Vec<u8> {
    // Tiny decoder for the test (no padding), so the test does not trust the code under test.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn the_file_holds_no_secret_subject_client_scope_or_claim() {
    let f = Fixture::new();
    let subject = "alice.liddell@wonderland.example";
    let client = "rabbit-hole-client";
    let claims = b"{\"favourite_tea\":\"darjeeling-first-flush\"}".to_vec();
    let grant = Grant::new(subject, client, "openid offline_access tea:brew")
        .unwrap()
        .with_claims(claims.clone());
    let mut strings = Vec::new();
    for _ in 0..20 {
        let rt = f.db.issue_refresh(&grant).unwrap();
        let at = f.db.issue_access_for_family(rt.family, None).unwrap();
        let next = f.db.rotate(rt.token.expose(), client, None).unwrap();
        strings.push(rt.token.expose().to_owned());
        strings.push(next.token.expose().to_owned());
        strings.push(at.token.expose().to_owned());
    }
    let standalone = f.db.issue_access(&grant).unwrap();
    strings.push(standalone.token.expose().to_owned());
    f.db.close().unwrap();
    let bytes = std::fs::read(f.path()).unwrap();
    assert!(bytes.len() > 4096);

    for needle in [
        subject.as_bytes(),
        client.as_bytes(),
        b"tea:brew",
        b"offline_access",
        b"darjeeling",
        &claims,
    ] {
        assert!(
            !contains(&bytes, needle),
            "{:?} found in the file",
            String::from_utf8_lossy(needle)
        );
    }
    for s in &strings {
        assert!(
            !contains(&bytes, s.as_bytes()),
            "a token string is in the file"
        );
        let tail = s.splitn(3, '_').nth(2).unwrap();
        let body = b64url_decode(tail);
        // Access body = secret (32); refresh body = family (16) ‖ generation (8) ‖ secret (32) ‖ tag.
        let secret = if s.contains("_at_") {
            &body[..32]
        } else {
            &body[24..56]
        };
        assert!(
            !contains(&bytes, secret),
            "a raw token secret is in the file"
        );
        // Any 12-byte window of the secret would already be a leak.
        assert!(!contains(&bytes, &secret[..12]));
    }
}

#[test]
fn wrong_master_key_is_refused_at_open_and_rotation_retires_the_old_key() {
    let f = Fixture::new();
    let rt =
        f.db.issue_refresh(&Grant::new("bob", "cli", "openid").unwrap())
            .unwrap();
    let token = rt.token.expose().to_owned();
    f.db.close().unwrap();

    let config = || Fixture::base(&f.clock).build().unwrap();
    let err = TokenDb::open(f.path(), &MasterKey::generate(), config()).unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::WrongMasterKey)),
        "{err}"
    );
    assert!(err.to_string().contains("master key"));

    let db = TokenDb::open(f.path(), &f.master, config()).unwrap();
    let new = MasterKey::generate();
    // Rotation needs the key in use.
    assert!(matches!(
        db.rotate_master_key(&new, &new),
        Err(Error::Store(StoreError::WrongMasterKey))
    ));
    db.rotate_master_key(&f.master, &new).unwrap();
    // The open handle keeps working; no record was rewritten.
    assert!(db.validate(&token).unwrap().is_active());
    db.close().unwrap();

    assert!(matches!(
        TokenDb::open(f.path(), &f.master, config()),
        Err(Error::Store(StoreError::WrongMasterKey))
    ));
    let db = TokenDb::open(f.path(), &new, config()).unwrap();
    assert!(db.validate(&token).unwrap().is_active());
}

#[test]
fn open_refuses_what_is_not_a_tokendb_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "not a database").unwrap();
    let err = TokenDb::open(&p, &MasterKey::generate(), Config::default()).unwrap_err();
    assert!(
        matches!(err, Error::Store(StoreError::NotATokenDb(_))),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "not a database");
    let missing = dir.path().join("missing.tdb");
    assert!(matches!(
        TokenDb::open(&missing, &MasterKey::generate(), Config::default()),
        Err(Error::Store(StoreError::NotFound(_)))
    ));
    assert!(!missing.exists(), "open must not create a file");
}
