//! The async API: futures completed by the writer, on a multi-thread tokio runtime with two
//! workers and no `spawn_blocking`; what a dropped future leaves behind; events of writes whose
//! caller went away.

use crate::common::{Backend, Fixture, grant};
use std::sync::Arc;
use tokendb::{Error, Event, RotateRefusal, TokenStatus};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn a_thousand_concurrent_rotations_complete_on_two_workers() {
    let f = Fixture::with(|b| b.grace_period(std::time::Duration::from_secs(10)));
    let db = f.db.asynchronous();
    let rt = runtime();
    rt.block_on(async {
        let mut families = Vec::new();
        for i in 0..1_000 {
            families.push((i, db.issue_refresh(&grant(i)).await.unwrap()));
        }
        let tasks: Vec<_> = families
            .into_iter()
            .map(|(i, issued)| {
                let db = db.clone();
                tokio::spawn(async move {
                    let next = db
                        .rotate(issued.token.expose(), &grant(i).client_id, None)
                        .await
                        .unwrap();
                    assert_eq!(next.generation, 2);
                    assert!(db.validate(next.token.expose()).await.unwrap().is_active());
                    next
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    match crate::BACKEND {
        // 2,000 durable writes; group commit batches the concurrent ones.
        Backend::File => assert!(f.db.commits() < 2_000, "{} commits", f.db.commits()),
        // One transaction per write, each committed once (PostgreSQL flushes concurrent
        // commits together itself).
        Backend::Postgres => assert_eq!(f.db.commits(), 2_000),
    }
}

#[test]
fn one_token_presented_by_many_tasks_gets_one_successor() {
    let f = Fixture::with(|b| b.grace_period(std::time::Duration::from_secs(10)));
    let db = f.db.asynchronous();
    let rt = runtime();
    let issued = rt.block_on(db.issue_refresh(&grant(1))).unwrap();
    let token = Arc::new(issued.token.expose().to_owned());
    let answers: Vec<_> = rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (db, token) = (db.clone(), Arc::clone(&token));
                tokio::spawn(async move { db.rotate(&token, &grant(1).client_id, None).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap().unwrap());
        }
        out
    });
    // One rotation, the others replays of the same successor (inside the grace window).
    assert_eq!(answers.iter().filter(|r| !r.replayed).count(), 1);
    let first = answers[0].token.expose();
    assert!(answers.iter().all(|r| r.token.expose() == first));
}

#[test]
fn a_dropped_write_is_applied_and_durable_and_still_reported() {
    let f = Fixture::new();
    let db = f.db.asynchronous();
    let issued = f.db.issue_refresh(&grant(1)).unwrap();
    let rt = issued.token.expose().to_owned();

    // Submitted when called; dropped unpolled: the rotation still happens.
    drop(db.rotate(&rt, &grant(1).client_id, None));
    // Closing drains the writer: whatever was submitted is durable before `close` returns.
    f.db.close().unwrap();
    let config = Fixture::base(&f.clock).build().unwrap();
    let reopened = f.reopen(config).unwrap();
    assert_eq!(
        reopened.validate(&rt).unwrap().status,
        TokenStatus::Rotated,
        "the dropped rotation was not applied"
    );

    // A reuse whose caller went away still revokes the family and is still reported.
    let db = reopened.asynchronous();
    let events_after = reopened.subscribe();
    drop(db.rotate(&rt, &grant(1).client_id, None));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match events_after.recv_deadline(deadline) {
            Ok(e) => seen.push(e),
            Err(e) => panic!("events after a dropped reuse: {e} (seen {seen:?})"),
        }
    }
    assert!(matches!(seen[0], Event::ReuseDetected { .. }), "{seen:?}");
    assert!(matches!(seen[1], Event::FamilyRevoked { .. }), "{seen:?}");
    assert!(matches!(
        reopened.validate(&rt).unwrap().status,
        TokenStatus::Revoked(_)
    ));
}

#[test]
fn refusals_and_lookups_answer_without_the_writer() {
    let f = Fixture::new();
    let db = f.db.asynchronous();
    let rt = runtime();
    rt.block_on(async {
        let at = db.issue_access(&grant(2)).await.unwrap();
        let before = f.db.commits();
        assert!(matches!(
            db.rotate("tdb_rt_not-a-token", "client-2", None).await,
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            db.rotate(at.token.expose(), "client-2", None).await,
            Err(Error::Refused(RotateRefusal::Unknown))
        ));
        assert_eq!(
            db.introspect(at.token.expose()).await.unwrap().sub(),
            Some("sub-2")
        );
        assert_eq!(f.db.commits(), before);
        assert_eq!(db.revoke(at.token.expose()).await.unwrap().tokens, 1);
        assert!(!db.validate(at.token.expose()).await.unwrap().is_active());
    });
}
