//! Refresh-token rotation semantics (design §5, promises 3, 4 and 8 of §9), through the public
//! [`TokenDb`] API on real files: deadlines, idle expiry, client binding, scope narrowing, reuse
//! detection and its events, the grace window, forged tags, storage that does not grow with
//! rotations, generation (not time) ordering, and the non-rotating mode.

// Test code: a panic is how a check fails. clippy.toml's `allow-*-in-tests` covers `#[test]`
// functions only, not the helpers they call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Clock, Error, Event, Expiry, Grant, ManualClock, RevokeReason, Revoked, RotateRefusal, Rotated,
    Scope, TokenDb, TokenStatus, TokenString,
};
use tokendb_core::token::TAG_LEN;
use tokendb_core::{KeyRing, ParsedToken, RefreshToken, TokenFormat};
use tokendb_store::{Entry, IndexEntry};
use tokendb_tests::place::Place;

const CLIENT: &str = "app";
const OTHER_CLIENT: &str = "other-app";
const GRANTED: &str = "openid offline_access profile";

fn grant() -> Grant {
    Grant::new("alice@example.com", CLIENT, GRANTED).unwrap()
}

fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

/// Rotates `token` for the right client with the full grant; it must succeed.
#[track_caller]
fn rotate(db: &TokenDb, token: &TokenString) -> Rotated {
    db.rotate(token.expose(), CLIENT, None).unwrap()
}

/// The refusal of a rotation that must fail.
#[track_caller]
fn refusal(r: tokendb::Result<Rotated>) -> RotateRefusal {
    match r {
        Err(Error::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[track_caller]
fn status(db: &TokenDb, token: &TokenString) -> TokenStatus {
    db.validate(token.expose()).unwrap().status
}

fn drain(rx: &tokendb::EventReceiver) -> Vec<Event> {
    rx.try_iter().collect()
}

fn expiry(at_ms: u64, now: u64) -> Expiry {
    Expiry::at(at_ms, now)
}

// ---- deadlines ----

/// A 90-day family rotated on day 89 dies on day 90: the successor inherits the family's
/// absolute deadline, and its idle deadline (now + 14 days) is capped by it.
#[test]
fn the_successor_keeps_the_family_absolute_deadline_and_idle_is_capped_by_it() {
    let fx = Fixture::new(); // defaults: 90 days absolute, 14 days idle
    let db = &fx.db;
    let absolute = T0 + 90 * DAY;
    let issued = db.issue_refresh(&grant()).unwrap();
    assert_eq!(issued.absolute, expiry(absolute, T0));
    assert_eq!(issued.idle, expiry(T0 + 14 * DAY, T0));

    let mut token = issued.token;
    for day in [10, 20, 30, 40, 50, 60, 70, 75] {
        let now = T0 + day * DAY + 7;
        fx.clock.set(now);
        let r = rotate(db, &token);
        assert_eq!(r.absolute, expiry(absolute, now), "day {day}");
        assert_eq!(r.idle, expiry(now + 14 * DAY, now), "day {day}");
        token = r.token;
    }
    // Day 89, before the idle deadline of day 75's rotation (day 89 + 7 ms).
    let day89 = T0 + 89 * DAY + 5;
    fx.clock.set(day89);
    let last = rotate(db, &token);
    assert_eq!(last.generation, 10);
    assert_eq!(last.absolute, expiry(absolute, day89));
    // now + 14 days would be day 103: capped at day 90.
    assert_eq!(last.idle, expiry(absolute, day89));
    let v = db.validate(last.token.expose()).unwrap();
    assert_eq!(v.status, TokenStatus::Active);
    assert_eq!(v.absolute.map(|e| e.at_ms), Some(absolute));
    assert_eq!(v.idle.map(|e| e.at_ms), Some(absolute));

    fx.clock.set(absolute - 1);
    assert_eq!(status(db, &last.token), TokenStatus::Active);
    fx.clock.set(absolute);
    assert_eq!(status(db, &last.token), TokenStatus::ExpiredAbsolute);
    let err = db.rotate(last.token.expose(), CLIENT, None).unwrap_err();
    assert!(
        matches!(err, Error::Refused(RotateRefusal::ExpiredAbsolute)),
        "{err:?}"
    );
    assert_eq!(err.oauth_error(), "invalid_grant");
    let i = db.introspect(last.token.expose()).unwrap();
    assert!(!i.is_active());
    assert_eq!(i.status, TokenStatus::ExpiredAbsolute);
    // No sweep ran: the record is still there, refused for its deadline only.
    assert_eq!(db.sweeper_metrics().passes, 0);
}

/// Idle expiry holds on its own (promise 4): past the idle window the token is refused although
/// the absolute deadline is far, and although nothing was swept.
#[test]
fn a_token_unused_longer_than_the_idle_window_is_refused_without_a_sweep() {
    let fx = Fixture::new();
    let db = &fx.db;
    let first = db.issue_refresh(&grant()).unwrap();
    fx.advance(DAY);
    let second = rotate(db, &first.token);
    let idle = T0 + DAY + 14 * DAY;
    assert_eq!(second.idle.at_ms, idle);

    fx.clock.set(idle - 1);
    assert_eq!(status(db, &second.token), TokenStatus::Active);
    fx.clock.set(idle);
    let v = db.validate(second.token.expose()).unwrap();
    assert_eq!(v.status, TokenStatus::ExpiredIdle);
    assert!(
        v.absolute.unwrap().at_ms > idle,
        "the absolute deadline is still ahead"
    );
    assert_eq!(
        refusal(db.rotate(second.token.expose(), CLIENT, None)),
        RotateRefusal::ExpiredIdle
    );
    // The older generation is refused for expiry, not taken for reuse: nothing gets revoked.
    assert_eq!(
        refusal(db.rotate(first.token.expose(), CLIENT, None)),
        RotateRefusal::ExpiredIdle
    );
    assert_eq!(status(db, &second.token), TokenStatus::ExpiredIdle);
    assert_eq!(
        db.introspect(second.token.expose()).unwrap().status,
        TokenStatus::ExpiredIdle
    );
    assert!(matches!(
        db.issue_access_for_family(first.family, None),
        Err(Error::Refused(RotateRefusal::ExpiredIdle))
    ));

    // Nothing was swept: the family record is still stored.
    let stored = Contents::of(db, &fx.place);
    assert_eq!(
        stored.families.keys().copied().collect::<Vec<_>>(),
        vec![first.family]
    );
    assert_eq!(db.sweeper_metrics().passes, 0);
}

// ---- client binding and scope ----

#[test]
fn another_client_is_refused_without_revoking_the_family() {
    let fx = Fixture::new();
    let db = &fx.db;
    let events = db.subscribe();
    let issued = db.issue_refresh(&grant()).unwrap();
    let family = issued.family;

    let err = db
        .rotate(issued.token.expose(), OTHER_CLIENT, None)
        .unwrap_err();
    assert!(
        matches!(err, Error::Refused(RotateRefusal::ClientMismatch)),
        "{err:?}"
    );
    assert_eq!(err.oauth_error(), "invalid_grant");
    assert_eq!(drain(&events), vec![Event::ClientMismatch { family }]);
    assert_eq!(status(db, &issued.token), TokenStatus::Active);

    // The right client can still rotate.
    let next = rotate(db, &issued.token);
    assert_eq!(next.generation, 2);
    // Another client presenting the old or the new generation is a mismatch, not reuse.
    assert_eq!(
        refusal(db.rotate(issued.token.expose(), OTHER_CLIENT, None)),
        RotateRefusal::ClientMismatch
    );
    assert_eq!(
        refusal(db.rotate(next.token.expose(), OTHER_CLIENT, Some(&scope("openid")))),
        RotateRefusal::ClientMismatch
    );
    assert_eq!(status(db, &next.token), TokenStatus::Active);
    assert_eq!(rotate(db, &next.token).generation, 3);
    assert_eq!(
        drain(&events),
        vec![
            Event::ClientMismatch { family },
            Event::ClientMismatch { family }
        ]
    );
}

#[test]
fn requested_scope_may_narrow_but_never_widen_and_does_not_stick() {
    let fx = Fixture::new();
    let db = &fx.db;
    let full = scope(GRANTED);
    let narrow = scope("openid");
    let issued = db.issue_refresh(&grant()).unwrap();

    let r2 = db
        .rotate(issued.token.expose(), CLIENT, Some(&narrow))
        .unwrap();
    assert_eq!(r2.generation, 2);
    assert_eq!(r2.scope, Some(narrow.clone()));
    // The family's grant is untouched: the new refresh token still carries all of it.
    assert_eq!(
        db.introspect(r2.token.expose()).unwrap().scope(),
        Some(&full)
    );

    // Wider: refused with invalid_scope, and nothing changes.
    let before = db.validate(r2.token.expose()).unwrap();
    for wider in [
        "openid email",
        "admin",
        "openid offline_access profile email",
    ] {
        let err = db
            .rotate(r2.token.expose(), CLIENT, Some(&scope(wider)))
            .unwrap_err();
        assert!(
            matches!(err, Error::Refused(RotateRefusal::ScopeWidened)),
            "{wider}: {err:?}"
        );
        assert_eq!(err.oauth_error(), "invalid_scope");
    }
    assert_eq!(db.validate(r2.token.expose()).unwrap(), before);

    // The next rotation without a scope gets the full grant, at the next generation.
    let r3 = rotate(db, &r2.token);
    assert_eq!(r3.generation, 3);
    assert_eq!(r3.scope, None);
    assert_eq!(
        db.introspect(r3.token.expose()).unwrap().scope(),
        Some(&full)
    );
    // Asking for the whole grant again after a narrowing is allowed.
    let r4 = db.rotate(r3.token.expose(), CLIENT, Some(&full)).unwrap();
    assert_eq!(r4.scope, Some(full.clone()));
    assert_eq!(
        refusal(db.rotate(r4.token.expose(), CLIENT, Some(&scope("email")))),
        RotateRefusal::ScopeWidened
    );
    assert_eq!(
        db.introspect(r4.token.expose()).unwrap().scope(),
        Some(&full)
    );
}

// ---- reuse ----

/// Presenting a genuine token of any earlier generation (outside a grace window) revokes the
/// family: every refresh generation and every access token of it, in the same step; the caller
/// gets `ReuseDetected` and the embedder an event. Other families and tokens are untouched.
#[test]
fn reuse_of_any_earlier_generation_revokes_the_whole_family() {
    for presented in 1..=5u64 {
        let fx = Fixture::new();
        let db = &fx.db;
        let events = db.subscribe();
        let issued = db.issue_refresh(&grant()).unwrap();
        let family = issued.family;
        let early_access = db.issue_access_for_family(family, None).unwrap();
        let mut chain = vec![issued.token];
        for _ in 0..5 {
            fx.advance(MINUTE);
            let next = rotate(db, chain.last().unwrap()).token;
            chain.push(next);
        }
        let late_access = db
            .issue_access_for_family(family, Some(&scope("openid")))
            .unwrap();
        let bystander = db.issue_refresh(&grant()).unwrap();
        let standalone = db.issue_access(&grant()).unwrap();
        fx.advance(2 * MINUTE);
        assert_eq!(drain(&events), vec![]);

        let old = &chain[usize::try_from(presented).unwrap() - 1];
        let err = db.rotate(old.expose(), CLIENT, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused(RotateRefusal::ReuseDetected { family: f, presented: p, newest: 6 })
                    if f == family && p == presented
            ),
            "generation {presented}: {err:?}"
        );
        assert_eq!(err.oauth_error(), "invalid_grant");
        assert_eq!(
            drain(&events),
            vec![
                Event::ReuseDetected {
                    family,
                    presented_generation: presented,
                    newest_generation: 6,
                    ms_since_rotation: 2 * MINUTE,
                    tokens_revoked: 2,
                },
                Event::FamilyRevoked {
                    family,
                    reason: RevokeReason::ReuseDetected,
                },
            ]
        );

        let revoked = TokenStatus::Revoked(RevokeReason::ReuseDetected);
        for t in &chain {
            assert_eq!(status(db, t), revoked, "generation {presented}");
        }
        // Access tokens of the family are revoked with it ("because its family was revoked").
        for a in [&early_access, &late_access] {
            assert_eq!(
                status(db, &a.token),
                TokenStatus::Revoked(RevokeReason::Family)
            );
            assert!(!db.introspect(a.token.expose()).unwrap().is_active());
        }
        assert_eq!(
            refusal(db.rotate(chain[5].expose(), CLIENT, None)),
            RotateRefusal::Revoked(RevokeReason::ReuseDetected)
        );
        assert!(matches!(
            db.issue_access_for_family(family, None),
            Err(Error::Refused(RotateRefusal::Revoked(
                RevokeReason::ReuseDetected
            )))
        ));
        assert_eq!(status(db, &bystander.token), TokenStatus::Active);
        assert_eq!(status(db, &standalone.token), TokenStatus::Active);
    }
}

/// Events go out with `try_send`: a subscriber that never reads, with its queue full, never
/// holds up a rotation or a reuse revocation.
#[test]
fn a_subscriber_that_never_reads_never_blocks_a_rotation() {
    let fx = Fixture::on_tmpfs(|b| b.event_capacity(1));
    let stalled = fx.db.subscribe();
    let db = fx.db.clone();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let worker = std::thread::spawn(move || {
        for _ in 0..25 {
            let issued = db.issue_refresh(&grant()).unwrap();
            let _ = db.rotate(issued.token.expose(), OTHER_CLIENT, None);
            let next = rotate(&db, &issued.token);
            let err = db.rotate(issued.token.expose(), CLIENT, None).unwrap_err();
            assert!(matches!(
                err,
                Error::Refused(RotateRefusal::ReuseDetected { .. })
            ));
            assert_eq!(
                status(&db, &next.token),
                TokenStatus::Revoked(RevokeReason::ReuseDetected)
            );
        }
        done_tx.send(()).unwrap();
    });
    match done_rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => worker.join().unwrap(),
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("a subscriber with a full queue blocked the database")
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
    }
    // 75 events went out; the stalled queue kept its capacity (the first) and dropped the rest.
    assert_eq!(stalled.len(), 1);
    assert!(matches!(
        stalled.try_recv(),
        Ok(Event::ClientMismatch { .. })
    ));

    // A subscriber that reads gets what happens next.
    let live = fx.db.subscribe();
    let issued = fx.db.issue_refresh(&grant()).unwrap();
    rotate(&fx.db, &issued.token);
    let _ = fx.db.rotate(issued.token.expose(), CLIENT, None);
    assert!(matches!(
        live.try_recv(),
        Ok(Event::ReuseDetected { family, .. }) if family == issued.family
    ));
}

// ---- grace ----

fn grace_fixture() -> Fixture {
    Fixture::with(|b| b.grace_period(Duration::from_secs(10)))
}

#[test]
fn inside_the_grace_window_the_predecessor_gets_the_same_successor_back() {
    let fx = grace_fixture();
    let db = &fx.db;
    let events = db.subscribe();
    let issued = db.issue_refresh(&grant()).unwrap();
    let t1 = issued.token;
    fx.advance(MINUTE);
    let rotated_at = T0 + MINUTE;
    let t2 = rotate(db, &t1);
    assert!(!t2.replayed);

    for dt in [0, 1, 5_000, 9_999] {
        fx.clock.set(rotated_at + dt);
        let again = rotate(db, &t1);
        assert!(again.replayed, "+{dt} ms");
        assert_eq!(again.token.expose(), t2.token.expose(), "+{dt} ms");
        assert_eq!(again.generation, 2);
        assert_eq!(again.family, issued.family);
        assert_eq!(again.absolute.at_ms, t2.absolute.at_ms);
        assert_eq!(again.idle.at_ms, t2.idle.at_ms);
    }
    // A replay may narrow the scope, not widen it; another client is refused; none revokes.
    let narrowed = db
        .rotate(t1.expose(), CLIENT, Some(&scope("openid")))
        .unwrap();
    assert!(narrowed.replayed);
    assert_eq!(narrowed.token.expose(), t2.token.expose());
    assert_eq!(narrowed.scope, Some(scope("openid")));
    assert_eq!(
        refusal(db.rotate(t1.expose(), CLIENT, Some(&scope("openid email")))),
        RotateRefusal::ScopeWidened
    );
    assert_eq!(
        refusal(db.rotate(t1.expose(), OTHER_CLIENT, None)),
        RotateRefusal::ClientMismatch
    );
    assert_eq!(status(db, &t1), TokenStatus::Rotated);
    assert_eq!(status(db, &t2.token), TokenStatus::Active);
    assert_eq!(
        drain(&events),
        vec![Event::ClientMismatch {
            family: issued.family
        }]
    );

    // The window is [rotation, rotation + 10 s): at its end the predecessor is reuse.
    fx.clock.set(rotated_at + 10_000);
    assert_eq!(
        refusal(db.rotate(t1.expose(), CLIENT, None)),
        RotateRefusal::ReuseDetected {
            family: issued.family,
            presented: 1,
            newest: 2
        }
    );
    assert_eq!(
        status(db, &t2.token),
        TokenStatus::Revoked(RevokeReason::ReuseDetected)
    );
}

#[test]
fn once_the_successor_was_rotated_its_predecessor_is_reuse_even_inside_the_window() {
    let fx = grace_fixture();
    let db = &fx.db;
    let issued = db.issue_refresh(&grant()).unwrap();
    let t1 = issued.token;
    let t2 = rotate(db, &t1).token;
    fx.advance(1_000);
    let t3 = rotate(db, &t2).token;
    fx.advance(1_000);
    // t2 is now the immediate predecessor: it gets t3 back.
    let again = rotate(db, &t2);
    assert!(again.replayed);
    assert_eq!(again.token.expose(), t3.expose());
    // t1's successor was already rotated: reuse, 2 s after t1 was rotated.
    assert_eq!(
        refusal(db.rotate(t1.expose(), CLIENT, None)),
        RotateRefusal::ReuseDetected {
            family: issued.family,
            presented: 1,
            newest: 3
        }
    );
    let revoked = RevokeReason::ReuseDetected;
    assert_eq!(status(db, &t3), TokenStatus::Revoked(revoked));
    // No replay out of a revoked family.
    assert_eq!(
        refusal(db.rotate(t2.expose(), CLIENT, None)),
        RotateRefusal::Revoked(revoked)
    );
}

#[test]
fn the_grace_window_is_at_most_sixty_seconds() {
    let clock = Arc::new(ManualClock::new(T0));
    for too_long in [Duration::from_secs(61), Duration::from_millis(60_001)] {
        let err = Fixture::base(&clock)
            .grace_period(too_long)
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{too_long:?}: {err:?}");
    }
    assert!(
        Fixture::base(&clock)
            .grace_period(Duration::from_secs(60))
            .build()
            .is_ok()
    );
}

// ---- forged tokens ----

/// A token that names a real family id but whose tag does not verify is simply unknown: it
/// neither rotates, nor revokes, nor counts as reuse, whatever generation it claims.
#[test]
fn a_token_with_a_bad_tag_naming_a_real_family_is_unknown_and_revokes_nothing() {
    let fx = Fixture::new();
    let db = &fx.db;
    let events = db.subscribe();
    let issued = db.issue_refresh(&grant()).unwrap();
    let family = issued.family;
    let current = rotate(db, &issued.token); // generation 1 is now an earlier generation
    let format = TokenFormat::default();

    let mut forged = Vec::new();
    // Genuine tokens with one tag bit flipped; encoding again recomputes the public checksum.
    for genuine in [&issued.token, &current.token] {
        let ParsedToken::Refresh(mut t) = format.parse(genuine.expose()).unwrap() else {
            panic!("not a refresh token")
        };
        t.tag[TAG_LEN - 1] ^= 0x01;
        forged.push(format.encode_refresh(&t));
    }
    // Tokens for the real family id under another tag key: an old, the current and a future
    // generation.
    let stranger = KeyRing::generate();
    for generation in [1, 2, 3] {
        forged.push(format.encode_refresh(&RefreshToken::mint(&stranger, family, generation)));
    }
    for f in &forged {
        assert!(format.parse(f.expose()).is_ok(), "well formed");
        let err = db.rotate(f.expose(), CLIENT, None).unwrap_err();
        assert!(
            matches!(err, Error::Refused(RotateRefusal::Unknown)),
            "{err:?}"
        );
        assert_eq!(err.oauth_error(), "invalid_grant");
        assert_eq!(db.revoke(f.expose()).unwrap(), Revoked::default());
        assert_eq!(status(db, f), TokenStatus::Unknown);
        assert!(!db.introspect(f.expose()).unwrap().is_active());
    }
    assert_eq!(drain(&events), vec![]);
    assert_eq!(status(db, &current.token), TokenStatus::Active);
    assert_eq!(rotate(db, &current.token).generation, 3);
}

// ---- storage ----

/// What the database holds, by table.
#[derive(Debug, Default, PartialEq, Eq)]
struct Census {
    families: usize,
    tokens: usize,
    /// Encoded size of each family record (`FamilyRecord::encode`, the bytes stored).
    family_bytes: Vec<usize>,
    family_tokens: usize,
    family_deadlines: usize,
    token_deadlines: usize,
    grace_deadlines: usize,
    by_subject: usize,
    by_client: usize,
}

/// Records and index entries, on either backend (on PostgreSQL, the index columns and rows read
/// as the entries they stand for: see `Contents::read_postgres`).
fn census(db: &TokenDb, place: &Place) -> Census {
    let keys = db.keys_for_tests();
    let stored = Contents::of(db, place);
    let mut c = Census {
        families: stored.families.len(),
        tokens: stored.tokens.len(),
        ..Census::default()
    };
    for (id, rec) in &stored.families {
        c.family_bytes.push(rec.encode(id, &keys).unwrap().len());
    }
    for entry in &stored.index {
        match entry {
            IndexEntry::FamilyToken(..) => c.family_tokens += 1,
            IndexEntry::Deadline(_, Entry::Family(_)) => c.family_deadlines += 1,
            IndexEntry::Deadline(_, Entry::Token(_)) => c.token_deadlines += 1,
            IndexEntry::Deadline(_, Entry::Grace(..)) => c.grace_deadlines += 1,
            IndexEntry::Subject(..) => c.by_subject += 1,
            IndexEntry::Client(..) => c.by_client += 1,
            other => panic!("unexpected index entry {other:?}"),
        }
    }
    c
}

/// Promise 8: one family rotated 10,000 times (a minute apart, so its deadline entry moves each
/// time) holds exactly the records and index entries it held after one rotation, and its family
/// record encodes to the same number of bytes; generation 1 is still detected as reuse, also
/// after a reopen.
#[test]
fn a_family_does_not_grow_with_its_rotations_and_old_generations_stay_detectable() {
    let fx = Fixture::on_tmpfs(|b| b);
    let db = &fx.db;
    let issued = db.issue_refresh(&grant()).unwrap();
    let access = db.issue_access_for_family(issued.family, None).unwrap();
    let first = issued.token;
    fx.advance(MINUTE);
    let mut token = rotate(db, &first).token;
    let after_one = census(db, &fx.place);
    assert_eq!(
        after_one,
        Census {
            families: 1,
            tokens: 1,
            family_bytes: after_one.family_bytes.clone(),
            family_tokens: 1,
            family_deadlines: 1,
            token_deadlines: 0, // access tokens are keyed by their deadline
            grace_deadlines: 0,
            by_subject: 1,
            by_client: 1,
        }
    );
    for _ in 1..10_000 {
        fx.advance(MINUTE);
        token = rotate(db, &token).token;
    }
    assert_eq!(census(db, &fx.place), after_one);

    // Reopen: the file alone still knows generation 1 was rotated long ago.
    db.close().unwrap();
    let db = fx
        .reopen(Fixture::base(&fx.clock).build().unwrap())
        .unwrap();
    assert_eq!(status(&db, &token), TokenStatus::Active);
    assert_eq!(status(&db, &first), TokenStatus::Rotated);
    assert_eq!(
        refusal(db.rotate(first.expose(), CLIENT, None)),
        RotateRefusal::ReuseDetected {
            family: issued.family,
            presented: 1,
            newest: 10_001
        }
    );
    assert_eq!(
        status(&db, &token),
        TokenStatus::Revoked(RevokeReason::ReuseDetected)
    );
    assert_eq!(
        status(&db, &access.token),
        TokenStatus::Revoked(RevokeReason::Family)
    );
}

/// With a grace period, each rotation files an index entry for the end of its window. Those must
/// not pile up with the rotations either: a later rotation makes the previous window moot, so
/// at most one such entry per family may remain, whether or not the sweeper runs.
#[test]
fn with_grace_on_a_family_does_not_grow_with_its_rotations_either() {
    let fx = Fixture::on_tmpfs(|b| b.grace_period(Duration::from_secs(10)));
    let db = &fx.db;
    let issued = db.issue_refresh(&grant()).unwrap();
    fx.advance(MINUTE);
    let mut token = rotate(db, &issued.token).token;
    let after_one = census(db, &fx.place);
    assert_eq!(after_one.grace_deadlines, 1);
    for _ in 1..1_000 {
        fx.advance(MINUTE);
        token = rotate(db, &token).token;
    }
    assert_eq!(census(db, &fx.place), after_one);
    assert_eq!(status(db, &token), TokenStatus::Active);
}

// ---- ordering ----

/// All rotations at the same millisecond (the clock never moves in this test): the generation
/// counter, not a timestamp, tells the newest token from the older ones.
#[test]
fn generations_not_timestamps_decide_which_token_is_newest() {
    let fx = Fixture::new();
    let db = &fx.db;
    let events = db.subscribe();
    let chain = |db: &TokenDb| {
        let issued = db.issue_refresh(&grant()).unwrap();
        let mut chain = vec![issued.token];
        for _ in 0..5 {
            let next = rotate(db, chain.last().unwrap()).token;
            chain.push(next);
        }
        (issued.family, chain)
    };

    let (_, newest_works) = chain(db);
    for (i, t) in newest_works.iter().enumerate() {
        let want = if i == 5 {
            TokenStatus::Active
        } else {
            TokenStatus::Rotated
        };
        assert_eq!(status(db, t), want, "generation {}", i + 1);
    }
    let r = rotate(db, &newest_works[5]);
    assert_eq!(r.generation, 7);

    for presented in [1u64, 3, 5] {
        let (family, chain) = chain(db);
        let old = &chain[usize::try_from(presented).unwrap() - 1];
        assert_eq!(
            refusal(db.rotate(old.expose(), CLIENT, None)),
            RotateRefusal::ReuseDetected {
                family,
                presented,
                newest: 6
            }
        );
        assert!(drain(&events).contains(&Event::ReuseDetected {
            family,
            presented_generation: presented,
            newest_generation: 6,
            ms_since_rotation: 0,
            tokens_revoked: 0,
        }));
        assert_eq!(
            status(db, &chain[5]),
            TokenStatus::Revoked(RevokeReason::ReuseDetected)
        );
    }
    assert_eq!(fx.clock.now_ms(), T0);
}

// ---- non-rotating mode ----

#[test]
fn non_rotating_tokens_come_back_unchanged_slide_idle_and_expire_after_inactivity() {
    let touch = MINUTE;
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(Duration::from_secs(24 * 3600), Duration::from_secs(3600))
            .dangerous_non_rotating_refresh_tokens(Duration::from_millis(touch))
    });
    let db = &fx.db;
    let issued = db.issue_refresh(&grant()).unwrap();
    let token = issued.token;
    assert_eq!(issued.idle.at_ms, T0 + HOUR);

    let use_at = |now: u64| {
        fx.clock.set(now);
        let r = rotate(db, &token);
        assert_eq!(r.token.expose(), token.expose());
        assert_eq!(r.generation, 1);
        assert!(!r.replayed);
        assert_eq!(r.absolute.at_ms, T0 + DAY);
        let v = db.validate(token.expose()).unwrap();
        assert_eq!(v.status, TokenStatus::Active);
        assert_eq!(v.idle.map(|e| e.at_ms), Some(r.idle.at_ms), "persisted");
        r.idle.at_ms
    };
    // Moved by less than the touch granularity: not written.
    assert_eq!(use_at(T0 + 30_000), T0 + HOUR);
    // Moved by exactly the granularity: written.
    assert_eq!(use_at(T0 + touch), T0 + touch + HOUR);
    assert_eq!(use_at(T0 + touch + 40_000), T0 + touch + HOUR);
    // Presented again and again: never reuse.
    for _ in 0..5 {
        assert_eq!(use_at(T0 + touch + 40_000), T0 + touch + HOUR);
    }
    let idle = T0 + touch + HOUR;
    fx.clock.set(idle - 1);
    assert_eq!(status(db, &token), TokenStatus::Active);
    fx.clock.set(idle);
    assert_eq!(status(db, &token), TokenStatus::ExpiredIdle);
    assert_eq!(
        refusal(db.rotate(token.expose(), CLIENT, None)),
        RotateRefusal::ExpiredIdle
    );

    // Used every 50 minutes, a non-rotating token lives to its absolute deadline, no further.
    let issued = db.issue_refresh(&grant()).unwrap();
    let start = fx.clock.now_ms();
    let absolute = start + DAY;
    let mut now = start;
    while now + 50 * MINUTE < absolute {
        now += 50 * MINUTE;
        fx.clock.set(now);
        let r = rotate(db, &issued.token);
        assert_eq!(r.token.expose(), issued.token.expose());
        assert_eq!(r.idle.at_ms, (now + HOUR).min(absolute));
    }
    fx.clock.set(absolute - 1);
    assert_eq!(status(db, &issued.token), TokenStatus::Active);
    fx.clock.set(absolute);
    assert_eq!(
        refusal(db.rotate(issued.token.expose(), CLIENT, None)),
        RotateRefusal::ExpiredAbsolute
    );
}
