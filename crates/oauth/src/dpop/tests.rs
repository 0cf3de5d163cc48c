// Test code: a panic is how a check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

//! Known-answer proofs: the RFC's own examples, and proofs made here, deterministically, from
//! fixed keys (ECDSA signatures per RFC 6979, Ed25519 signatures are deterministic), one for
//! each way RFC 9449 §4.3 says a proof fails.

use super::*;
use serde_json::json;

/// RFC 9449 §4.2's example proof, as published.
const RFC_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
/// Its key's thumbprint, as RFC 9449 §6.1 gives it.
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
const RFC_IAT_MS: u64 = 1_562_262_616_000;

pub(crate) const NOW: u64 = 1_800_000_000_000;
const URI: &str = "https://as.example/token";

#[derive(Clone, Copy)]
pub(crate) enum Key {
    P256,
    Ed25519,
}

pub(crate) fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap()
}

pub(crate) fn ed_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x22; 32])
}

pub(crate) fn public_jwk(key: Key) -> Value {
    match key {
        Key::P256 => {
            let point = p256_key().verifying_key().to_sec1_point(false);
            let sec1 = point.as_bytes();
            json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&sec1[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&sec1[33..65]),
            })
        }
        Key::Ed25519 => json!({
            "kty": "OKP", "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(ed_key().verifying_key().to_bytes()),
        }),
    }
}

pub(crate) fn alg(key: Key) -> &'static str {
    match key {
        Key::P256 => "ES256",
        Key::Ed25519 => "EdDSA",
    }
}

/// Signs `header.payload` with `key` (whatever the header claims).
pub(crate) fn sign(key: Key, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let sig = match key {
        Key::P256 => {
            use p256::ecdsa::signature::Signer as _;
            let s: p256::ecdsa::Signature = p256_key().sign(input.as_bytes());
            s.to_bytes().to_vec()
        }
        Key::Ed25519 => {
            use ed25519_dalek::Signer as _;
            ed_key().sign(input.as_bytes()).to_bytes().to_vec()
        }
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

pub(crate) fn header(key: Key) -> Value {
    json!({ "typ": "dpop+jwt", "alg": alg(key), "jwk": public_jwk(key) })
}

pub(crate) fn claims() -> Value {
    json!({ "jti": "e1j3V_bKic8-LAEB", "htm": "POST", "htu": URI, "iat": NOW / 1000 })
}

/// A proof of `key` with `edit` applied to its header and claims.
pub(crate) fn proof_with(key: Key, edit: impl FnOnce(&mut Value, &mut Value)) -> String {
    let (mut h, mut c) = (header(key), claims());
    edit(&mut h, &mut c);
    sign(key, &h, &c)
}

fn check(proof: &str) -> Result<VerifiedProof, DpopError> {
    verify_proof(
        proof,
        &ProofContext::new("POST", URI),
        &DpopConfig::DEFAULT,
        NOW,
    )
}

#[test]
fn the_rfc_example_proof_verifies_and_its_thumbprint_is_the_rfcs() {
    let ctx = ProofContext::new("POST", "https://server.example.com/token");
    let at = |now| verify_proof(RFC_PROOF, &ctx, &DpopConfig::DEFAULT, now);
    let p = at(RFC_IAT_MS + 1_000).unwrap();
    assert_eq!(p.jkt.to_base64url(), RFC_JKT);
    assert_eq!(p.jti, "-BwC3ESc6acc2lTc");
    assert_eq!(p.iat_ms, RFC_IAT_MS);
    assert_eq!(p.replay_until_ms, RFC_IAT_MS + 60_000 + 1_000);
    // The same proof an hour later is stale; on another endpoint, another method, refused.
    assert_eq!(at(RFC_IAT_MS + 3_600_000), Err(DpopError::Iat));
    let other = ProofContext::new("POST", "https://server.example.com/other");
    assert_eq!(
        verify_proof(RFC_PROOF, &other, &DpopConfig::DEFAULT, RFC_IAT_MS),
        Err(DpopError::Htu)
    );
    let get = ProofContext::new("GET", "https://server.example.com/token");
    assert_eq!(
        verify_proof(RFC_PROOF, &get, &DpopConfig::DEFAULT, RFC_IAT_MS),
        Err(DpopError::Htm)
    );
}

/// RFC 8037 Appendix A.3: the thumbprint of its Ed25519 example key.
#[test]
fn the_ed25519_thumbprint_is_rfc_8037s() {
    let jwk =
        json!({"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
    let (_, jkt) = public_key(jwk.as_object().unwrap(), DpopAlg::EdDsa).unwrap();
    assert_eq!(
        jkt.to_base64url(),
        "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    );
}

#[test]
fn proofs_of_both_algorithms_verify_and_name_their_key() {
    for key in [Key::P256, Key::Ed25519] {
        let p = check(&proof_with(key, |_, _| {})).unwrap();
        let (_, jkt) = public_key(public_jwk(key).as_object().unwrap(), p_alg(key)).unwrap();
        assert_eq!(p.jkt, jkt);
        assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
        // Deterministic: the same proof twice is the same string (a known answer).
        assert_eq!(proof_with(key, |_, _| {}), proof_with(key, |_, _| {}));
    }
    let es = check(&proof_with(Key::P256, |_, _| {})).unwrap().jkt;
    let ed = check(&proof_with(Key::Ed25519, |_, _| {})).unwrap().jkt;
    assert_ne!(es, ed);
}

fn p_alg(key: Key) -> DpopAlg {
    match key {
        Key::P256 => DpopAlg::Es256,
        Key::Ed25519 => DpopAlg::EdDsa,
    }
}

/// Check 2: a well-formed JWT, and nothing unbounded.
#[test]
fn malformed_proofs_are_refused() {
    let good = proof_with(Key::P256, |_, _| {});
    let parts: Vec<&str> = good.split('.').collect();
    for bad in [
        String::new(),
        "a.b".to_owned(),
        format!("{good}.x"),
        format!("{}.{}", parts[0], parts[1]),
        format!("!!.{}.{}", parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("[1]"),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode("not json"),
            parts[2]
        ),
        format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
        "x".repeat(MAX_PROOF_LEN + 1),
    ] {
        assert_eq!(check(&bad), Err(DpopError::Malformed), "{bad:.60}");
    }
}

/// Check 3: every required parameter and claim, of the right type.
#[test]
fn a_missing_claim_is_named() {
    for name in ["jti", "htm", "htu", "iat"] {
        let p = proof_with(Key::P256, |_, c| {
            c.as_object_mut().unwrap().remove(name);
        });
        assert_eq!(check(&p), Err(DpopError::MissingClaim(name)), "{name}");
    }
    for name in ["typ", "alg", "jwk"] {
        let p = proof_with(Key::P256, |h, _| {
            h.as_object_mut().unwrap().remove(name);
        });
        assert_eq!(check(&p), Err(DpopError::MissingClaim(name)), "{name}");
    }
    let p = proof_with(Key::P256, |_, c| c["iat"] = json!("1800000000"));
    assert_eq!(check(&p), Err(DpopError::MissingClaim("iat")));
    let p = proof_with(Key::P256, |h, _| h["jwk"] = json!("a string"));
    assert_eq!(check(&p), Err(DpopError::MissingClaim("jwk")));
}

/// Check 4: `typ`.
#[test]
fn the_type_must_be_dpop_jwt() {
    for typ in ["JWT", "at+jwt", "dpop+JWT "] {
        let p = proof_with(Key::P256, |h, _| h["typ"] = json!(typ));
        assert_eq!(check(&p), Err(DpopError::Typ), "{typ}");
    }
}

/// Check 5: asymmetric, accepted algorithms only; `none` never.
#[test]
fn only_accepted_asymmetric_algorithms() {
    for a in ["none", "HS256", "RS256", "ES384", "es256", ""] {
        let p = proof_with(Key::P256, |h, _| h["alg"] = json!(a));
        assert_eq!(check(&p), Err(DpopError::Alg), "{a}");
    }
    let unsigned = {
        let good = proof_with(Key::P256, |h, _| h["alg"] = json!("none"));
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[2] = "";
        parts.join(".")
    };
    assert_eq!(check(&unsigned), Err(DpopError::Alg));
    // An algorithm the configuration leaves out.
    let only_ed = DpopConfig::DEFAULT.with_algs(&[DpopAlg::EdDsa]);
    let p = proof_with(Key::P256, |_, _| {});
    assert_eq!(
        verify_proof(&p, &ProofContext::new("POST", URI), &only_ed, NOW),
        Err(DpopError::Alg)
    );
    assert_eq!(only_ed.algs_value(), "EdDSA");
    assert_eq!(DpopConfig::DEFAULT.algs_value(), "ES256 EdDSA Ed25519");
    // RFC 9864's name for the same Ed25519 signatures.
    let p = proof_with(Key::Ed25519, |h, _| h["alg"] = json!("Ed25519"));
    assert!(check(&p).is_ok());
    let p = proof_with(Key::P256, |h, _| h["alg"] = json!("Ed25519"));
    assert_eq!(check(&p), Err(DpopError::Jwk));
}

/// Check 6: the signature, by the embedded key.
#[test]
fn the_signature_must_verify_with_the_embedded_key() {
    let good = proof_with(Key::P256, |_, _| {});
    let parts: Vec<&str> = good.split('.').collect();
    // Claims changed after signing.
    let mut c = claims();
    c["htm"] = json!("GET");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(check(&forged), Err(DpopError::Signature));
    // Another key's signature under this key's header.
    let other = {
        let sk = p256::ecdsa::SigningKey::from_slice(&[0x33; 32]).unwrap();
        use p256::ecdsa::signature::Signer as _;
        let s: p256::ecdsa::Signature = sk.sign(format!("{}.{}", parts[0], parts[1]).as_bytes());
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            URL_SAFE_NO_PAD.encode(s.to_bytes())
        )
    };
    assert_eq!(check(&other), Err(DpopError::Signature));
    // A signature of the wrong length, and an empty one.
    for sig in ["AAAA", ""] {
        let p = format!("{}.{}.{sig}", parts[0], parts[1]);
        assert_eq!(check(&p), Err(DpopError::Signature));
    }
    // Ed25519 likewise.
    let ed = proof_with(Key::Ed25519, |_, _| {});
    let mut bytes = URL_SAFE_NO_PAD
        .decode(ed.rsplit('.').next().unwrap())
        .unwrap();
    bytes[0] ^= 1;
    let (signed, _) = ed.rsplit_once('.').unwrap();
    let p = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
    assert_eq!(check(&p), Err(DpopError::Signature));
}

/// Check 7: a public key of the algorithm's type; never a private one.
#[test]
fn the_key_must_be_public_and_of_the_algorithms_type() {
    // The private scalar in the header.
    let p = proof_with(Key::P256, |h, _| {
        h["jwk"]["d"] = json!(URL_SAFE_NO_PAD.encode([0x11; 32]));
    });
    assert_eq!(check(&p), Err(DpopError::PrivateKey));
    // An Ed25519 key under ES256, a P-256 key under EdDSA.
    let p = proof_with(Key::P256, |h, _| h["jwk"] = public_jwk(Key::Ed25519));
    assert_eq!(check(&p), Err(DpopError::Jwk));
    let p = proof_with(Key::Ed25519, |h, _| h["jwk"] = public_jwk(Key::P256));
    assert_eq!(check(&p), Err(DpopError::Jwk));
    // A point that is not on the curve, a short coordinate, a symmetric key, `crit`.
    let p = proof_with(Key::P256, |h, _| {
        h["jwk"]["y"] = json!(URL_SAFE_NO_PAD.encode([7; 32]));
    });
    assert_eq!(check(&p), Err(DpopError::Jwk));
    let p = proof_with(Key::P256, |h, _| {
        h["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([7; 31]));
    });
    assert_eq!(check(&p), Err(DpopError::Jwk));
    let p = proof_with(Key::P256, |h, _| {
        h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
    });
    assert_eq!(check(&p), Err(DpopError::Jwk));
    let p = proof_with(Key::P256, |h, _| h["crit"] = json!(["exp"]));
    assert_eq!(check(&p), Err(DpopError::Jwk));
}

/// Checks 8 and 9: the request's method and URI, the URI compared as RFC 9449 says.
#[test]
fn method_and_uri_must_match_the_request() {
    let p = proof_with(Key::P256, |_, c| c["htm"] = json!("GET"));
    assert_eq!(check(&p), Err(DpopError::Htm));
    let p = proof_with(Key::P256, |_, c| c["htm"] = json!("post"));
    assert_eq!(check(&p), Err(DpopError::Htm), "methods are case-sensitive");
    for other in [
        "https://as.example/token2",
        "https://other.example/token",
        "http://as.example/token",
        "https://as.example:8443/token",
        "as.example/token",
    ] {
        let p = proof_with(Key::P256, |_, c| c["htu"] = json!(other));
        assert_eq!(check(&p), Err(DpopError::Htu), "{other}");
    }
    for same in [
        "https://as.example/token?x=1",
        "https://as.example/token#frag",
        "HTTPS://AS.Example/token",
        "https://as.example:443/token",
    ] {
        let p = proof_with(Key::P256, |_, c| c["htu"] = json!(same));
        assert!(check(&p).is_ok(), "{same}");
    }
}

/// Check 11: `iat` within the window: 60 s back (its whole second), 5 s ahead.
#[test]
fn the_issue_time_must_be_within_the_window() {
    let at = |iat_s: u64, now: u64| {
        let p = proof_with(Key::Ed25519, |_, c| c["iat"] = json!(iat_s));
        verify_proof(
            &p,
            &ProofContext::new("POST", URI),
            &DpopConfig::DEFAULT,
            now,
        )
    };
    let iat = NOW / 1000;
    assert!(at(iat, NOW + 60_999).is_ok());
    assert_eq!(at(iat, NOW + 61_000), Err(DpopError::Iat));
    assert!(at(iat + 5, NOW).is_ok());
    assert_eq!(at(iat + 6, NOW), Err(DpopError::Iat));
    assert_eq!(at(0, NOW), Err(DpopError::Iat));
    assert_eq!(at(u64::MAX / 1000, NOW), Err(DpopError::Iat));
    // The replay deadline is the window's end: past it the iat check refuses the proof.
    let p = at(iat, NOW).unwrap();
    assert_eq!(p.replay_until_ms, NOW + 61_000);
    let narrow = DpopConfig::DEFAULT.with_window(Duration::from_secs(10), Duration::ZERO);
    let p = proof_with(Key::Ed25519, |_, _| {});
    let ctx = ProofContext::new("POST", URI);
    assert!(verify_proof(&p, &ctx, &narrow, NOW + 10_999).is_ok());
    assert_eq!(
        verify_proof(&p, &ctx, &narrow, NOW + 11_000),
        Err(DpopError::Iat)
    );
}

/// The `jti` is required (check 3) and bounded.
#[test]
fn the_jti_is_bounded() {
    for jti in [String::new(), "j".repeat(MAX_JTI_LEN + 1)] {
        let p = proof_with(Key::P256, |_, c| c["jti"] = json!(jti));
        assert_eq!(check(&p), Err(DpopError::Jti));
    }
}

/// Check 12: a resource request's proof carries the access token's hash.
#[test]
fn a_resource_proof_must_hash_its_access_token() {
    let token = "tdb_at_example";
    let ctx = ProofContext::new("GET", "https://rs.example/resource").with_access_token(token);
    let make = |ath: Option<String>| {
        proof_with(Key::P256, |_, c| {
            c["htm"] = json!("GET");
            c["htu"] = json!("https://rs.example/resource");
            if let Some(a) = ath {
                c["ath"] = json!(a);
            }
        })
    };
    let ok = make(Some(access_token_hash(token)));
    assert!(verify_proof(&ok, &ctx, &DpopConfig::DEFAULT, NOW).is_ok());
    for bad in [
        None,
        Some(access_token_hash("another")),
        Some(String::new()),
    ] {
        assert_eq!(
            verify_proof(&make(bad), &ctx, &DpopConfig::DEFAULT, NOW),
            Err(DpopError::Ath)
        );
    }
    // RFC 9449 §7.1's example: the hash of its access token.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

/// Check 10: the server's nonce, when it requires one; `use_dpop_nonce` otherwise.
#[test]
fn a_required_nonce_must_be_fresh_and_genuine() {
    let nonces = DpopNonces::with_key([5; 32], Duration::from_secs(300));
    let ctx = ProofContext::new("POST", URI).with_nonces(Some(&nonces));
    let with = |nonce: Option<String>| {
        proof_with(Key::Ed25519, |_, c| {
            if let Some(n) = nonce {
                c["nonce"] = json!(n);
            }
        })
    };
    let fresh = nonces.issue(NOW);
    assert!(verify_proof(&with(Some(fresh.clone())), &ctx, &DpopConfig::DEFAULT, NOW).is_ok());
    let other_server = DpopNonces::with_key([6; 32], Duration::from_secs(300)).issue(NOW);
    let stale = nonces.issue(NOW - 600_000);
    for bad in [
        None,
        Some(other_server),
        Some(stale),
        Some("garbage".into()),
    ] {
        let e = verify_proof(&with(bad), &ctx, &DpopConfig::DEFAULT, NOW).unwrap_err();
        assert_eq!(e, DpopError::Nonce);
        assert_eq!(e.code(), "use_dpop_nonce");
    }
    // A nonce lives through its slot and the next, not longer.
    assert!(nonces.accepts(&fresh, NOW + 300_000));
    assert!(!nonces.accepts(&fresh, NOW + 600_000));
    assert_eq!(DpopError::Signature.code(), "invalid_dpop_proof");
}

/// No altered proof is accepted: every character of a valid proof (of each algorithm), replaced
/// by each of a few others, gives an error, and the checker never panics on the result.
#[test]
fn every_single_character_change_is_refused() {
    for key in [Key::P256, Key::Ed25519] {
        let good = proof_with(key, |_, _| {});
        assert!(check(&good).is_ok());
        for i in 0..good.len() {
            for c in ['A', 'g', '_', '.', '-'] {
                if good.as_bytes()[i] == c as u8 {
                    continue;
                }
                let mut bad = good.clone().into_bytes();
                bad[i] = c as u8;
                let bad = String::from_utf8(bad).unwrap();
                assert!(check(&bad).is_err(), "position {i} as {c:?}");
            }
        }
        // Truncated anywhere.
        for n in 0..good.len() {
            assert!(check(&good[..n]).is_err(), "truncated to {n}");
        }
    }
}
