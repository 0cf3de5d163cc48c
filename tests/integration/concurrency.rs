//! Concurrent presentations of one refresh token (design §5, promise 3 of §9): real threads
//! released together on a barrier, each round on a fresh family. Exactly one rotation wins;
//! with a grace period every other presenter gets that same successor back, without one they
//! are refused as reuse and the family (the winner's successor included) is revoked. Never two
//! live successors.

// Test code: a panic is how a check fails. clippy.toml's `allow-*-in-tests` covers `#[test]`
// functions only, not the helpers they call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common::*;
use std::sync::Barrier;
use std::time::Duration;
use tokendb::{
    Error, Event, Grant, RevokeReason, RotateRefusal, Rotated, TokenStatus, WriterOptions,
};

const THREADS: usize = 8;
const CLIENT: &str = "app";

/// Runs `rounds` races of [`THREADS`] presentations of one fresh token each and checks them.
fn race(fx: &Fixture, grace: bool, rounds: usize) {
    let db = &fx.db;
    let events = db.subscribe();
    for round in 0..rounds {
        let grant = Grant::new(format!("user-{round}"), CLIENT, "openid offline_access").unwrap();
        let issued = db.issue_refresh(&grant).unwrap();
        let family = issued.family;
        let token = issued.token.expose();
        let barrier = Barrier::new(THREADS);
        let results: Vec<tokendb::Result<Rotated>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        db.rotate(token, CLIENT, None)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        let winners: Vec<&Rotated> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| !r.replayed)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let winner = winners[0];
        assert_eq!(winner.generation, 2);
        assert_eq!(winner.family, family);
        let seen = drain(&events);

        if grace {
            for r in &results {
                let r = r.as_ref().unwrap_or_else(|e| {
                    panic!("round {round}: inside the grace window a loser got {e:?}")
                });
                assert_eq!(r.token.expose(), winner.token.expose(), "round {round}");
                assert_eq!(r.generation, 2);
            }
            assert_eq!(seen, vec![], "round {round}");
            assert_eq!(
                db.validate(winner.token.expose()).unwrap().status,
                TokenStatus::Active
            );
            assert_eq!(db.validate(token).unwrap().status, TokenStatus::Rotated);
            // The one successor is the family's current token: it rotates on.
            let next = db.rotate(winner.token.expose(), CLIENT, None).unwrap();
            assert_eq!(next.generation, 3);
            assert!(!next.replayed);
        } else {
            // The first loser finds reuse and revokes the family; the ones after it find the
            // family revoked for reuse. Both are invalid_grant to the client.
            let mut reuse = 0;
            for r in results.iter().filter_map(|r| r.as_ref().err()) {
                match r {
                    Error::Refused(RotateRefusal::ReuseDetected {
                        family: f,
                        presented: 1,
                        newest: 2,
                    }) if *f == family => reuse += 1,
                    Error::Refused(RotateRefusal::Revoked(RevokeReason::ReuseDetected)) => {}
                    other => panic!("round {round}: a loser got {other:?}"),
                }
                assert_eq!(r.oauth_error(), "invalid_grant");
            }
            assert_eq!(reuse, 1, "round {round}: {results:?}");
            assert_eq!(
                db.validate(winner.token.expose()).unwrap().status,
                TokenStatus::Revoked(RevokeReason::ReuseDetected),
                "round {round}: the winner's successor must die with the family"
            );
            assert!(matches!(
                db.rotate(winner.token.expose(), CLIENT, None),
                Err(Error::Refused(RotateRefusal::Revoked(
                    RevokeReason::ReuseDetected
                )))
            ));
            assert_eq!(
                seen,
                vec![
                    Event::ReuseDetected {
                        family,
                        presented_generation: 1,
                        newest_generation: 2,
                        ms_since_rotation: 0,
                        tokens_revoked: 0,
                    },
                    Event::FamilyRevoked {
                        family,
                        reason: RevokeReason::ReuseDetected,
                    },
                ],
                "round {round}"
            );
        }
    }
}

fn drain(rx: &tokendb::EventReceiver) -> Vec<Event> {
    rx.try_iter().collect()
}

fn grace(b: tokendb::ConfigBuilder) -> tokendb::ConfigBuilder {
    b.grace_period(Duration::from_secs(10))
}

/// The default group-commit writer, on the ordinary temp dir: presentations that queue while a
/// commit is in flight land in one batch, where each op sees the ones before it.
#[test]
fn one_winner_under_group_commit_with_grace() {
    race(&Fixture::with(grace), true, 50);
}

#[test]
fn one_winner_under_group_commit_without_grace() {
    race(&Fixture::new(), false, 50);
}

/// Every presentation waits for the others to arrive, so each race is one batch.
#[test]
fn one_winner_when_every_presentation_shares_one_batch() {
    let batched = |b: tokendb::ConfigBuilder| {
        b.writer(
            WriterOptions::DEFAULT
                .with_max_batch(1024)
                .with_max_wait(Some(Duration::from_millis(20))),
        )
    };
    race(&Fixture::on_tmpfs(|b| grace(batched(b))), true, 10);
    race(&Fixture::on_tmpfs(batched), false, 10);
}

/// One transaction per operation: the presentations are serialised by the writer.
#[test]
fn one_winner_with_one_transaction_per_operation() {
    let single = |b: tokendb::ConfigBuilder| {
        b.writer(WriterOptions::DEFAULT.with_max_batch(1).with_max_wait(None))
    };
    race(&Fixture::on_tmpfs(|b| grace(single(b))), true, 25);
    race(&Fixture::on_tmpfs(single), false, 25);
}
