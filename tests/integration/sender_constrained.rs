//! Sender-constrained families (RFC 9449 DPoP, RFC 8705 mutual TLS): the confirmation is fixed
//! at issue, survives rotation and reopening, is returned by validation and introspection, and
//! only a presentation that proves it rotates; the token without the key is refused, reported,
//! and by default kills the family. Unbound families behave as before. The replay cache of
//! proofs survives a reopen and is swept.

use crate::common::{Backend, Contents, Fixture, HOUR, MINUTE, T0, grant};
use std::time::Duration;
use tokendb::{
    Config, Confirmation, Error, Event, RevokeReason, RotateRefusal, SweeperConfig, TokenDb,
    TokenStatus,
};
use tokendb_store::{Entry, IndexEntry};

fn key() -> Confirmation {
    Confirmation::jkt_from_base64url("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs").unwrap()
}

fn events(db: &TokenDb, rx: &tokendb::EventReceiver) -> Vec<Event> {
    let _ = db;
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[test]
fn a_bound_family_keeps_its_confirmation_across_rotations_and_reopening() {
    let f = Fixture::new();
    let g = grant(1).with_confirmation(key());
    let client = g.client_id.clone();
    let issued = f.db.issue_refresh(&g).unwrap();
    let first = f.db.issue_access_for_family(issued.family, None).unwrap();
    assert_eq!(
        f.db.validate(first.token.expose()).unwrap().confirmation,
        Some(key()),
        "the code exchange's access token is bound like its family"
    );
    let mut token = issued.token;
    for generation in 2..=4 {
        f.advance(MINUTE);
        let r =
            f.db.refresh_confirmed(token.expose(), &client, None, Some(&key()))
                .unwrap();
        assert_eq!(r.refresh.generation, generation);
        for t in [&r.refresh.token, &r.access.token] {
            let v = f.db.validate(t.expose()).unwrap();
            assert!(v.is_active());
            assert_eq!(v.confirmation, Some(key()));
            let info = f.db.introspect(t.expose()).unwrap();
            assert_eq!(info.cnf(), Some(&key()));
            assert_eq!(info.cnf().unwrap().member(), "jkt");
        }
        token = r.refresh.token;
    }
    // Stored authenticated in the file: still there after a reopen.
    f.db.close().unwrap();
    let db = f.reopen(Fixture::base(&f.clock).build().unwrap()).unwrap();
    assert_eq!(
        db.validate(token.expose()).unwrap().confirmation,
        Some(key())
    );
    let r = db
        .refresh_confirmed(token.expose(), &client, None, Some(&key()))
        .unwrap();
    assert_eq!(r.refresh.generation, 5);
    match crate::BACKEND {
        Backend::File => assert!(db.verify(10).unwrap().problems.is_empty()),
        // Every record authenticates and its index rows agree with it.
        Backend::Postgres => Contents::of(&db, &f.place).assert_exact(),
    }
}

/// The theft the binding is for: the token without the key. Refused with `invalid_grant`, an
/// event, the family and its access tokens revoked; the legitimate client's next refresh then
/// fails too (its grant is gone), as after reuse.
#[test]
fn the_token_without_the_key_is_refused_and_kills_the_family() {
    let f = Fixture::new();
    let rx = f.db.subscribe();
    let g = grant(2).with_confirmation(key());
    let client = g.client_id.clone();
    let issued = f.db.issue_refresh(&g).unwrap();
    let r =
        f.db.refresh_confirmed(issued.token.expose(), &client, None, Some(&key()))
            .unwrap();
    for stolen_with in [None, Some(Confirmation::Jkt([9; 32]))] {
        let f2 = Fixture::new();
        let issued = f2.db.issue_refresh(&g).unwrap();
        let rx2 = f2.db.subscribe();
        let err = f2
            .db
            .refresh_confirmed(issued.token.expose(), &client, None, stolen_with.as_ref())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused(RotateRefusal::ConfirmationMismatch { revoked: true, family })
                    if family == issued.family
            ),
            "{err}"
        );
        assert_eq!(err.oauth_error(), "invalid_grant");
        assert!(events(&f2.db, &rx2).contains(&Event::ConfirmationMismatch {
            family: issued.family,
            revoked: true,
            tokens_revoked: 0,
        }));
    }
    // A plain `refresh` (no proof at all) is the same mismatch.
    let before = f.db.commits();
    let err =
        f.db.refresh(r.refresh.token.expose(), &client, None)
            .unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(RotateRefusal::ConfirmationMismatch { revoked: true, .. })
    ));
    assert_eq!(
        f.db.commits(),
        before + 1,
        "the revocation is one durable write"
    );
    let seen = events(&f.db, &rx);
    assert!(seen.contains(&Event::ConfirmationMismatch {
        family: issued.family,
        revoked: true,
        tokens_revoked: 1,
    }));
    assert!(seen.contains(&Event::FamilyRevoked {
        family: issued.family,
        reason: RevokeReason::ConfirmationMismatch,
    }));
    assert_eq!(
        f.db.validate(r.refresh.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::ConfirmationMismatch)
    );
    assert_eq!(
        f.db.validate(r.access.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Family),
        "revoked with its family"
    );
    // The key's holder comes next: the family is gone.
    assert!(matches!(
        f.db.refresh_confirmed(r.refresh.token.expose(), &client, None, Some(&key())),
        Err(Error::Refused(RotateRefusal::Revoked(
            RevokeReason::ConfirmationMismatch
        )))
    ));
}

/// With the documented opt-out, a mismatch is refused and reported but changes nothing, and
/// the key's holder carries on.
#[test]
fn keeping_the_family_on_a_mismatch_refuses_without_a_write() {
    let f = Fixture::with(|b| b.dangerous_keep_family_on_confirmation_mismatch());
    let rx = f.db.subscribe();
    let g = grant(3).with_confirmation(key());
    let client = g.client_id.clone();
    let issued = f.db.issue_refresh(&g).unwrap();
    let err =
        f.db.refresh(issued.token.expose(), &client, None)
            .unwrap_err();
    assert!(matches!(
        err,
        Error::Refused(RotateRefusal::ConfirmationMismatch { revoked: false, .. })
    ));
    assert_eq!(
        events(&f.db, &rx),
        vec![Event::ConfirmationMismatch {
            family: issued.family,
            revoked: false,
            tokens_revoked: 0,
        }]
    );
    assert!(f.db.validate(issued.token.expose()).unwrap().is_active());
    let r =
        f.db.refresh_confirmed(issued.token.expose(), &client, None, Some(&key()))
            .unwrap();
    assert_eq!(r.refresh.generation, 2);
    // Reuse still revokes, key or no key.
    assert!(matches!(
        f.db.refresh_confirmed(issued.token.expose(), &client, None, Some(&key())),
        Err(Error::Refused(RotateRefusal::ReuseDetected { .. }))
    ));
}

/// A grace retry hands the kept successor only to the key's holder.
#[test]
fn a_grace_retry_without_the_key_gets_nothing() {
    let f = Fixture::with(|b| b.grace_period(Duration::from_secs(30)));
    let g = grant(4).with_confirmation(key());
    let client = g.client_id.clone();
    let issued = f.db.issue_refresh(&g).unwrap();
    let r =
        f.db.refresh_confirmed(issued.token.expose(), &client, None, Some(&key()))
            .unwrap();
    let retry =
        f.db.refresh_confirmed(issued.token.expose(), &client, None, Some(&key()))
            .unwrap();
    assert!(retry.refresh.replayed);
    assert_eq!(retry.refresh.token.expose(), r.refresh.token.expose());
    assert!(matches!(
        f.db.refresh(issued.token.expose(), &client, None),
        Err(Error::Refused(RotateRefusal::ConfirmationMismatch {
            revoked: true,
            ..
        }))
    ));
    assert!(!f.db.validate(r.refresh.token.expose()).unwrap().is_active());
}

/// Unbound families behave as before: no confirmation anywhere, and a presented key changes
/// nothing.
#[test]
fn unbound_families_ignore_a_presented_key() {
    let f = Fixture::new();
    let g = grant(5);
    let issued = f.db.issue_refresh(&g).unwrap();
    let r =
        f.db.refresh_confirmed(issued.token.expose(), &g.client_id, None, Some(&key()))
            .unwrap();
    let r =
        f.db.refresh(r.refresh.token.expose(), &g.client_id, None)
            .unwrap();
    for t in [&r.refresh.token, &r.access.token] {
        assert_eq!(f.db.validate(t.expose()).unwrap().confirmation, None);
        assert_eq!(f.db.introspect(t.expose()).unwrap().cnf(), None);
    }
    // A standalone token may be bound by its grant (a mutual-TLS client credentials grant).
    let cert = Confirmation::X5tS256([4; 32]);
    let alone =
        f.db.issue_access(&grant(6).with_confirmation(cert))
            .unwrap();
    let info = f.db.introspect(alone.token.expose()).unwrap();
    assert_eq!(info.cnf(), Some(&cert));
    assert_eq!(info.cnf().unwrap().member(), "x5t#S256");
}

/// The replay cache: once per proof until its window ends, across a reopen, shared by the
/// key's thumbprint (another key's proof with the same `jti` is another proof), swept after.
#[test]
fn a_replayed_proof_is_refused_also_after_reopening_and_swept_after_its_window() {
    let f = Fixture::new();
    let until = T0 + 5 * MINUTE;
    assert!(f.db.remember_proof(&key(), "jti-1", until).unwrap());
    assert!(!f.db.remember_proof(&key(), "jti-1", until).unwrap());
    assert!(
        f.db.remember_proof(&Confirmation::Jkt([1; 32]), "jti-1", until)
            .unwrap()
    );
    assert!(f.db.remember_proof(&key(), "jti-2", until).unwrap());
    f.db.close().unwrap();
    let config = |clock| {
        Config::builder()
            .clock(clock)
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .build()
            .unwrap()
    };
    let db = f.reopen(config(f.clock.clone())).unwrap();
    assert!(
        !db.remember_proof(&key(), "jti-1", until).unwrap(),
        "after a restart"
    );
    let proofs = |db: &TokenDb| {
        Contents::of(db, &f.place)
            .index
            .iter()
            .filter(|e| matches!(e, IndexEntry::Deadline(_, Entry::Proof(_))))
            .count()
    };
    assert_eq!(proofs(&db), 3);
    if crate::BACKEND == Backend::File {
        assert_eq!(db.stats(T0, &[]).unwrap().proofs, 3);
    }
    f.advance(HOUR);
    let pass = db.sweep_now(None).unwrap();
    assert_eq!(pass.proofs, 3, "{pass:?}");
    assert_eq!(proofs(&db), 0);
    if crate::BACKEND == Backend::File {
        assert_eq!(db.stats(T0 + HOUR, &[]).unwrap().proofs, 0);
        assert!(db.verify(10).unwrap().problems.is_empty());
    }
}

/// One proof presented from many threads at once (a replay racing the original): exactly one
/// is accepted.
#[test]
fn concurrent_presentations_of_one_proof_accept_exactly_one() {
    let f = Fixture::new();
    let until = T0 + MINUTE;
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| f.db.remember_proof(&key(), "raced", until).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| usize::from(h.join().unwrap()))
            .sum()
    });
    assert_eq!(accepted, 1);
}
