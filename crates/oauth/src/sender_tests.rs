// Test code: a panic is how a check fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! DPoP at the endpoints: the token endpoint binds and answers `token_type` `DPoP`, the stolen
//! refresh token without the key fails and kills its family, replayed and duplicated proofs are
//! refused, nonces are demanded with `use_dpop_nonce`, and a resource takes a bound token only
//! with a proof of its key.

use crate::dpop::tests::{Key, NOW, proof_with};
use crate::dpop::{DpopConfig, DpopNonces, access_token_hash};
use crate::{Client, DpopSetup, OAuth, Request, Response, StaticClients};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Confirmation, Grant, ManualClock, MasterKey, RevokeReason, TokenDb, TokenStatus,
};

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const TOKEN_URI: &str = "https://as.example/token";
const RESOURCE: &str = "https://as.example/resource";

struct Fx {
    _dir: tempfile::TempDir,
    db: TokenDb,
    oauth: OAuth,
}

fn fx(nonces: bool) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::builder()
        .clock(Arc::new(ManualClock::new(NOW)))
        .build()
        .unwrap();
    let db = TokenDb::create(dir.path().join("t.tdb"), &MasterKey::generate(), config).unwrap();
    let mut setup = DpopSetup::new(DpopConfig::DEFAULT, TOKEN_URI);
    if nonces {
        setup = setup.with_nonces(DpopNonces::with_key([9; 32], Duration::from_secs(300)));
    }
    let oauth = OAuth::new(
        db.asynchronous(),
        StaticClients::new().with("spa", Client::public()),
    )
    .with_dpop(setup);
    Fx {
        _dir: dir,
        db,
        oauth,
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// A token request's proof by `key`, with a fresh `jti` of `n`.
fn token_proof(key: Key, n: u32, nonce: Option<&str>) -> String {
    proof_with(key, |_, c| {
        c["jti"] = json!(format!("jti-{n}"));
        if let Some(v) = nonce {
            c["nonce"] = json!(v);
        }
    })
}

fn resource_proof(key: Key, n: u32, token: &str) -> String {
    proof_with(key, |_, c| {
        c["jti"] = json!(format!("rs-{n}"));
        c["htm"] = json!("GET");
        c["htu"] = json!(RESOURCE);
        c["ath"] = json!(access_token_hash(token));
    })
}

fn jkt(key: Key) -> Confirmation {
    let p = crate::dpop::verify_proof(
        &token_proof(key, 0, None),
        &crate::dpop::ProofContext::new("POST", TOKEN_URI),
        &DpopConfig::DEFAULT,
        NOW,
    )
    .unwrap();
    p.jkt
}

async fn refresh(oauth: &OAuth, token: &str, proofs: &[Option<&str>]) -> Response {
    let body = serde_urlencoded::to_string([
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("client_id", "spa"),
    ])
    .unwrap();
    oauth
        .token(&Request::new(None, FORM, body.as_bytes()).with_dpop(proofs.iter().copied()))
        .await
}

#[test]
fn the_key_holder_refreshes_a_dpop_token_and_the_thief_kills_the_family() {
    let f = fx(false);
    let issued =
        f.db.issue_refresh(
            &Grant::new("alice", "spa", "openid")
                .unwrap()
                .with_confirmation(jkt(Key::P256)),
        )
        .unwrap();
    run(async {
        let p = token_proof(Key::P256, 1, None);
        let ok = refresh(&f.oauth, issued.token.expose(), &[Some(&p)]).await;
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        let body = json(&ok);
        assert_eq!(body["token_type"], "DPoP");
        let access = body["access_token"].as_str().unwrap().to_owned();
        let rt = body["refresh_token"].as_str().unwrap().to_owned();

        // The same proof again: a replay.
        let replay = refresh(&f.oauth, &rt, &[Some(&p)]).await;
        assert_eq!(
            (replay.status, json(&replay)["error"].as_str()),
            (400, Some("invalid_dpop_proof"))
        );
        // Two proofs at once.
        let (a, b) = (
            token_proof(Key::P256, 2, None),
            token_proof(Key::P256, 3, None),
        );
        let two = refresh(&f.oauth, &rt, &[Some(&a), Some(&b)]).await;
        assert_eq!(json(&two)["error"], "invalid_dpop_proof");
        // Those refusals touched nothing: the token is still good.
        assert!(f.db.validate(&rt).unwrap().is_active());

        // The thief: the refresh token with its own key's proof, then with none.
        let thief = refresh(&f.oauth, &rt, &[Some(&token_proof(Key::Ed25519, 4, None))]).await;
        assert_eq!(
            (thief.status, json(&thief)["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            f.db.validate(&rt).unwrap().status,
            TokenStatus::Revoked(RevokeReason::ConfirmationMismatch),
            "the family is dead"
        );
        assert!(
            !f.db.validate(&access).unwrap().is_active(),
            "with its access token"
        );
        // The owner's next refresh fails too: log in again.
        let owner = refresh(&f.oauth, &rt, &[Some(&token_proof(Key::P256, 5, None))]).await;
        assert_eq!(json(&owner)["error"], "invalid_grant");
    });
}

#[test]
fn a_stolen_refresh_token_without_any_proof_fails_and_kills_the_family() {
    let f = fx(false);
    let issued =
        f.db.issue_refresh(
            &Grant::new("bob", "spa", "openid")
                .unwrap()
                .with_confirmation(jkt(Key::Ed25519)),
        )
        .unwrap();
    run(async {
        let r = refresh(&f.oauth, issued.token.expose(), &[]).await;
        assert_eq!(
            (r.status, json(&r)["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(
            f.db.validate(issued.token.expose()).unwrap().status,
            TokenStatus::Revoked(RevokeReason::ConfirmationMismatch)
        );
    });
}

#[test]
fn an_unbound_family_stays_a_bearer_family_and_a_bad_proof_is_refused_first() {
    let f = fx(false);
    let issued =
        f.db.issue_refresh(&Grant::new("carol", "spa", "openid").unwrap())
            .unwrap();
    run(async {
        let bad = proof_with(Key::P256, |_, c| {
            c["htu"] = json!("https://as.example/elsewhere")
        });
        let r = refresh(&f.oauth, issued.token.expose(), &[Some(&bad)]).await;
        assert_eq!(json(&r)["error"], "invalid_dpop_proof");
        assert!(f.db.validate(issued.token.expose()).unwrap().is_active());
        let r = refresh(
            &f.oauth,
            issued.token.expose(),
            &[Some(&token_proof(Key::P256, 1, None))],
        )
        .await;
        assert_eq!(json(&r)["token_type"], "Bearer");
    });
}

#[test]
fn a_server_that_requires_nonces_demands_one_with_use_dpop_nonce() {
    let f = fx(true);
    let issued =
        f.db.issue_refresh(
            &Grant::new("dan", "spa", "openid")
                .unwrap()
                .with_confirmation(jkt(Key::P256)),
        )
        .unwrap();
    run(async {
        let first = refresh(
            &f.oauth,
            issued.token.expose(),
            &[Some(&token_proof(Key::P256, 1, None))],
        )
        .await;
        assert_eq!(
            (first.status, json(&first)["error"].as_str()),
            (400, Some("use_dpop_nonce"))
        );
        let nonce = first.header("DPoP-Nonce").unwrap().to_owned();
        let ok = refresh(
            &f.oauth,
            issued.token.expose(),
            &[Some(&token_proof(Key::P256, 2, Some(&nonce)))],
        )
        .await;
        assert_eq!(ok.status, 200);
        assert!(ok.header("DPoP-Nonce").is_some());
    });
}

#[test]
fn a_resource_takes_a_bound_token_only_with_a_proof_of_its_key() {
    let f = fx(false);
    let issued =
        f.db.issue_refresh(
            &Grant::new("erin", "spa", "openid")
                .unwrap()
                .with_confirmation(jkt(Key::P256)),
        )
        .unwrap();
    let access = f.db.issue_access_for_family(issued.family, None).unwrap();
    let token = access.token.expose().to_owned();
    let auth = format!("DPoP {token}");
    run(async {
        let at = |auth: Option<String>, proofs: Vec<Option<String>>| {
            let oauth = f.oauth.clone();
            async move {
                let proofs: Vec<Option<&str>> = proofs.iter().map(|p| p.as_deref()).collect();
                oauth
                    .authorize_resource(auth.as_deref(), &proofs, ("GET", RESOURCE), None)
                    .await
            }
        };
        let ok = at(
            Some(auth.clone()),
            vec![Some(resource_proof(Key::P256, 1, &token))],
        )
        .await
        .unwrap();
        assert_eq!((ok.sub.as_str(), ok.cnf), ("erin", Some(jkt(Key::P256))));
        // The same proof twice: a replay.
        let again = at(
            Some(auth.clone()),
            vec![Some(resource_proof(Key::P256, 1, &token))],
        )
        .await
        .unwrap_err();
        assert!(
            again
                .header("WWW-Authenticate")
                .unwrap()
                .contains("invalid_dpop_proof")
        );
        // Another key's proof; no proof; the token as a bearer token.
        let other = at(
            Some(auth.clone()),
            vec![Some(resource_proof(Key::Ed25519, 2, &token))],
        )
        .await
        .unwrap_err();
        assert_eq!(other.status, 401);
        assert!(
            other
                .header("WWW-Authenticate")
                .unwrap()
                .contains("error=\"invalid_dpop_proof\"")
        );
        let none = at(Some(auth.clone()), vec![]).await.unwrap_err();
        assert!(
            none.header("WWW-Authenticate")
                .unwrap()
                .starts_with("DPoP ")
        );
        let bearer = at(Some(format!("Bearer {token}")), vec![])
            .await
            .unwrap_err();
        assert_eq!(bearer.status, 401);
        assert!(
            bearer
                .header("WWW-Authenticate")
                .unwrap()
                .contains("invalid_token")
        );
        // No credentials: both challenges, DPoP's naming its algorithms.
        let anon = at(None, vec![]).await.unwrap_err();
        let challenges: Vec<&str> = anon
            .headers
            .iter()
            .filter(|(n, _)| *n == "WWW-Authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(challenges.len(), 2);
        assert!(challenges[0].starts_with("Bearer realm="));
        assert!(
            challenges[1].starts_with("DPoP realm=")
                && challenges[1].contains("algs=\"ES256 EdDSA Ed25519\"")
        );
        // A proof for another token (wrong ath).
        let wrong = at(
            Some(auth.clone()),
            vec![Some(resource_proof(Key::P256, 3, "another"))],
        )
        .await
        .unwrap_err();
        assert!(
            wrong
                .header("WWW-Authenticate")
                .unwrap()
                .contains("invalid_dpop_proof")
        );
        // Revoked: invalid_token.
        f.db.revoke_family(issued.family).unwrap();
        let revoked = at(
            Some(auth.clone()),
            vec![Some(resource_proof(Key::P256, 4, &token))],
        )
        .await
        .unwrap_err();
        assert!(
            revoked
                .header("WWW-Authenticate")
                .unwrap()
                .contains("invalid_token")
        );
    });
}

/// A proof accepted before a restart is a replay after it: the replay cache is in the file.
#[test]
fn a_replayed_proof_is_refused_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tdb");
    let master = MasterKey::generate();
    let clock = Arc::new(ManualClock::new(NOW));
    let open = |create: bool| {
        let config = Config::builder().clock(clock.clone()).build().unwrap();
        let db = if create {
            TokenDb::create(&path, &master, config)
        } else {
            TokenDb::open(&path, &master, config)
        }
        .unwrap();
        let oauth = OAuth::new(
            db.asynchronous(),
            StaticClients::new().with("spa", Client::public()),
        )
        .with_dpop(DpopSetup::new(DpopConfig::DEFAULT, TOKEN_URI));
        (db, oauth)
    };
    let (db, oauth) = open(true);
    let grant = Grant::new("fay", "spa", "openid")
        .unwrap()
        .with_confirmation(jkt(Key::P256));
    let first = db.issue_refresh(&grant).unwrap();
    let second = db.issue_refresh(&grant).unwrap();
    let proof = token_proof(Key::P256, 7, None);
    run(async {
        let ok = refresh(&oauth, first.token.expose(), &[Some(&proof)]).await;
        assert_eq!(ok.status, 200);
    });
    drop(oauth);
    db.close().unwrap();
    drop(db);
    let (db, oauth) = open(false);
    run(async {
        // The same proof, still inside its window, on another family of the same key.
        let again = refresh(&oauth, second.token.expose(), &[Some(&proof)]).await;
        assert_eq!(
            (again.status, json(&again)["error"].as_str()),
            (400, Some("invalid_dpop_proof"))
        );
        assert!(db.validate(second.token.expose()).unwrap().is_active());
    });
}
