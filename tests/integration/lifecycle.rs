//! Lifetimes and revocation through the public API (promise 4 and design §5).

use crate::common::{DAY, Fixture, HOUR, MINUTE};
use std::time::Duration;
use tokendb::{Error, Grant, RevokeReason, RotateRefusal, StoreError, TokenStatus};

fn grant() -> Grant {
    Grant::new("alice@example.com", "demo-client", "openid offline_access").unwrap()
}

#[test]
fn issue_validate_introspect() {
    let f = Fixture::new();
    let rt =
        f.db.issue_refresh(&grant().with_claims(b"{\"acr\":\"2\"}".to_vec()))
            .unwrap();
    assert_eq!(rt.absolute.expires_in, 90 * DAY / 1000);
    assert_eq!(rt.idle.expires_in, 14 * DAY / 1000);
    let at = f.db.issue_access_for_family(rt.family, None).unwrap();
    assert_eq!(at.expires.expires_in, HOUR / 1000);
    assert!(rt.token.expose().starts_with("tdb_rt_"));
    assert!(at.token.expose().starts_with("tdb_at_"));

    let v = f.db.validate(rt.token.expose()).unwrap();
    assert_eq!(v.status, TokenStatus::Active);
    assert_eq!(v.family, Some(rt.family));
    let i = f.db.introspect(at.token.expose()).unwrap();
    assert!(i.is_active());
    assert_eq!(i.sub(), Some("alice@example.com"));
    assert_eq!(i.client_id(), Some("demo-client"));
    assert_eq!(i.scope().unwrap().to_string(), "offline_access openid");
    assert_eq!(i.token_type(), Some("access_token"));
    assert_eq!(i.iat(), Some(crate::common::T0 / 1000));
    assert_eq!(i.exp(), Some((crate::common::T0 + HOUR) / 1000));
    let claims = i.claims.as_ref().unwrap();
    assert_eq!(
        claims.exp_ms,
        crate::common::T0 + HOUR,
        "RFC units and ms side by side"
    );
    assert_eq!(claims.iat_ms, crate::common::T0);
    assert_eq!(claims.expires_in, HOUR / 1000);
    assert_eq!(i.extra(), Some(&b"{\"acr\":\"2\"}"[..]));
    let i = f.db.introspect(rt.token.expose()).unwrap();
    assert_eq!(i.token_type(), Some("refresh_token"));
    assert_eq!(i.claims.unwrap().idle.unwrap().expires_in, 14 * DAY / 1000);

    // A well-formed token this database never issued.
    let other = crate::common::Fixture::new();
    let foreign = other.db.issue_access(&grant()).unwrap();
    assert_eq!(
        f.db.validate(foreign.token.expose()).unwrap().status,
        TokenStatus::Unknown
    );
    assert!(!f.db.introspect(foreign.token.expose()).unwrap().is_active());
}

#[test]
fn expired_tokens_are_refused_before_any_sweep() {
    let f = Fixture::with(|b| {
        b.refresh_lifetime(Duration::from_millis(10 * DAY), Duration::from_millis(DAY))
    });
    let rt = f.db.issue_refresh(&grant()).unwrap();
    let at = f.db.issue_access(&grant()).unwrap();

    // Access token: deadlines are exclusive — at exactly its deadline it is expired.
    f.advance(HOUR - 1);
    assert!(f.db.validate(at.token.expose()).unwrap().is_active());
    f.advance(1);
    assert_eq!(
        f.db.validate(at.token.expose()).unwrap().status,
        TokenStatus::ExpiredAbsolute
    );
    assert!(!f.db.introspect(at.token.expose()).unwrap().is_active());

    // Refresh token: idle expiry long before the absolute one.
    f.advance(DAY - HOUR);
    assert_eq!(
        f.db.validate(rt.token.expose()).unwrap().status,
        TokenStatus::ExpiredIdle
    );
    assert!(matches!(
        f.db.rotate(rt.token.expose(), "demo-client", None),
        Err(Error::Refused(RotateRefusal::ExpiredIdle))
    ));

    // Absolute: keep a family alive by rotating daily; it still dies at day 10.
    let mut tok = f.db.issue_refresh(&grant()).unwrap().token;
    for _ in 0..9 {
        f.advance(DAY - MINUTE);
        tok =
            f.db.rotate(tok.expose(), "demo-client", None)
                .unwrap()
                .token;
    }
    f.advance(10 * DAY);
    assert_eq!(
        f.db.validate(tok.expose()).unwrap().status,
        TokenStatus::ExpiredAbsolute
    );
    // Nothing was swept: the sweeper never ran, yet every answer is "expired", not "active".
    assert_eq!(f.db.sweeper_metrics().passes, 0);
}

#[test]
fn revoking_a_refresh_token_revokes_its_family_and_access_tokens() {
    let f = Fixture::new();
    let events = f.db.subscribe();
    let rt = f.db.issue_refresh(&grant()).unwrap();
    let a1 = f.db.issue_access_for_family(rt.family, None).unwrap();
    let a2 =
        f.db.issue_access_for_family(rt.family, Some(&tokendb::Scope::parse("openid").unwrap()))
            .unwrap();
    let unrelated = f.db.issue_access(&grant()).unwrap();
    let r = f.db.revoke(rt.token.expose()).unwrap();
    assert_eq!((r.families, r.tokens), (1, 2));
    assert_eq!(
        f.db.validate(rt.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Requested)
    );
    for a in [&a1, &a2] {
        assert_eq!(
            f.db.validate(a.token.expose()).unwrap().status,
            TokenStatus::Revoked(RevokeReason::Family)
        );
        assert!(!f.db.introspect(a.token.expose()).unwrap().is_active());
    }
    assert!(f.db.validate(unrelated.token.expose()).unwrap().is_active());
    assert!(matches!(
        events.try_recv(),
        Ok(tokendb::Event::FamilyRevoked {
            reason: RevokeReason::Requested,
            ..
        })
    ));
    // Revoking again, or an unknown token, is not an error (RFC 7009 §2.2).
    assert_eq!(f.db.revoke(rt.token.expose()).unwrap().families, 0);
    // A revoked family cannot mint access tokens or rotate.
    assert!(matches!(
        f.db.issue_access_for_family(rt.family, None),
        Err(Error::Refused(RotateRefusal::Revoked(_)))
    ));
    assert!(matches!(
        f.db.rotate(rt.token.expose(), "demo-client", None),
        Err(Error::Refused(RotateRefusal::Revoked(_)))
    ));
}

#[test]
fn revoke_by_subject_client_and_family() {
    let f = Fixture::new();
    let alice_web =
        f.db.issue_refresh(&Grant::new("alice", "web", "openid").unwrap())
            .unwrap();
    let alice_app =
        f.db.issue_refresh(&Grant::new("alice", "app", "openid").unwrap())
            .unwrap();
    let alice_at =
        f.db.issue_access(&Grant::new("alice", "app", "openid").unwrap())
            .unwrap();
    let bob_web =
        f.db.issue_refresh(&Grant::new("bob", "web", "openid").unwrap())
            .unwrap();
    let bob_at = f.db.issue_access_for_family(bob_web.family, None).unwrap();

    let r = f.db.revoke_subject("alice", Some("app")).unwrap();
    assert_eq!((r.families, r.tokens), (1, 1));
    assert!(f.db.validate(alice_web.token.expose()).unwrap().is_active());
    assert_eq!(
        f.db.validate(alice_app.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Subject)
    );
    assert_eq!(
        f.db.validate(alice_at.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Subject)
    );

    let r = f.db.revoke_client("web").unwrap();
    assert_eq!((r.families, r.tokens), (2, 1));
    assert_eq!(
        f.db.validate(bob_at.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Family)
    );
    assert_eq!(
        f.db.validate(alice_web.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Client)
    );

    let carol =
        f.db.issue_refresh(&Grant::new("carol", "web", "openid").unwrap())
            .unwrap();
    assert_eq!(f.db.revoke_family(carol.family).unwrap().families, 1);
    assert!(!f.db.validate(carol.token.expose()).unwrap().is_active());
}

#[test]
fn revocation_is_visible_to_every_later_lookup_from_every_thread() {
    let f = Fixture::new();
    for _ in 0..50 {
        let rt = f.db.issue_refresh(&grant()).unwrap();
        let tok = rt.token.expose().to_owned();
        // Warm the reader pool on other threads with a pre-revocation snapshot.
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert!(f.db.validate(&tok).unwrap().is_active()));
            }
        });
        f.db.revoke(&tok).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert!(!f.db.validate(&tok).unwrap().is_active()));
            }
        });
    }
}

#[test]
fn cap_on_live_families_evicts_or_refuses() {
    use tokendb::FamilyCap;
    let f = Fixture::with(|b| b.family_cap(Some(FamilyCap::EvictOldest(2))));
    let first = f.db.issue_refresh(&grant()).unwrap();
    f.advance(1);
    let second = f.db.issue_refresh(&grant()).unwrap();
    f.advance(1);
    let other_client =
        f.db.issue_refresh(&Grant::new("alice@example.com", "other", "openid").unwrap())
            .unwrap();
    let third = f.db.issue_refresh(&grant()).unwrap();
    assert_eq!(third.evicted, vec![first.family]);
    assert_eq!(
        f.db.validate(first.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Evicted)
    );
    for t in [&second, &third, &other_client] {
        assert!(f.db.validate(t.token.expose()).unwrap().is_active());
    }

    let f = Fixture::with(|b| b.family_cap(Some(FamilyCap::Refuse(1))));
    f.db.issue_refresh(&grant()).unwrap();
    let err = f.db.issue_refresh(&grant()).unwrap_err();
    assert!(matches!(err, Error::CapReached { limit: 1 }), "{err}");
}

#[test]
fn closed_database_says_so() {
    let f = Fixture::new();
    let clone = f.db.clone();
    let rt = f.db.issue_refresh(&grant()).unwrap();
    f.db.close().unwrap();
    for r in [
        clone.validate(rt.token.expose()).map(drop),
        clone.issue_refresh(&grant()).map(drop),
    ] {
        assert!(matches!(r, Err(Error::Store(StoreError::Closed))));
    }
}

#[test]
fn the_background_sweeper_deletes_expired_tokens_and_says_so() {
    let f = Fixture::with(|b| {
        b.sweeper(
            tokendb::SweeperConfig::DEFAULT
                .with_enabled(true)
                .with_interval(Duration::from_millis(10)),
        )
    });
    let events = f.db.subscribe();
    let at = f.db.issue_access(&grant()).unwrap();
    let live = f.db.issue_refresh(&grant()).unwrap();
    f.advance(HOUR);
    let event = events
        .recv_timeout(Duration::from_secs(20))
        .expect("an Expired event from the background sweeper");
    assert_eq!(
        event,
        tokendb::Event::Expired {
            families: 0,
            tokens: 1
        }
    );
    assert_eq!(
        f.db.validate(at.token.expose()).unwrap().status,
        TokenStatus::Unknown
    );
    assert!(f.db.validate(live.token.expose()).unwrap().is_active());
    assert!(f.db.sweeper_metrics().passes >= 1);
}
