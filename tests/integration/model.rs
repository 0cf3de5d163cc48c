//! The engine against tokendb's one reference model of the lifecycle rules
//! (`tokendb_tests::integrity::model`, design §5): random operation sequences on every
//! `cargo test`. The same model runs under the fuzzer (`fuzz/fuzz_targets/ops_model.rs`) and
//! replays its committed seeds (`fuzz_corpus.rs`); it shares no code with `tokendb-rotation`.
//! After every operation the engine's answers (generations, deadlines, replays, the exact
//! refusal, revocation and sweep counts) and its events must equal the model's, and after a
//! reopen and at the end so must the validation and introspection of every token handed out.
//! Below it, two targeted properties the random runs reach only rarely.

// Test code: a panic is how a check fails. clippy.toml's `allow-*-in-tests` covers `#[test]`
// functions only, not the helpers they call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common::*;
use proptest::prelude::*;
use tokendb::{Event, Grant, RevokeReason, Revoked, TokenStatus};
use tokendb_tests::integrity::{model, scratch_root};
use tokendb_tests::place::Place;

const SUBJECTS: [&str; 3] = ["alice", "bob", "carol"];
const CLIENTS: [&str; 2] = ["app", "cli"];
const GRANTED: &str = "openid offline_access profile";

/// A revocation count (`Revoked` is `#[non_exhaustive]`).
fn revoked(families: u64, tokens: u64) -> Revoked {
    let mut r = Revoked::default();
    r.families = families;
    r.tokens = tokens;
    r
}

fn grant(subject: usize, client: usize) -> Grant {
    Grant::new(SUBJECTS[subject], CLIENTS[client], GRANTED).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        // ~5 ms a case on tmpfs; each PostgreSQL case creates a schema and commits over a
        // socket, so that suite runs fewer.
        cases: if crate::BACKEND == Backend::File { 256 } else { 24 },
        // Keep failures out of the source tree; proptest prints the minimal input to rerun
        // (commit it as a seed under fuzz/corpus/ops_model/ once fixed).
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_agrees_with_the_reference_model(
        input in proptest::collection::vec(any::<u8>(), 1..=400),
    ) {
        let dir = tempfile::tempdir_in(scratch_root()).unwrap();
        let report = match crate::BACKEND {
            Backend::File => model::run(dir.path(), &input),
            Backend::Postgres => model::run_on(&Place::fresh_postgres(), &input),
        };
        prop_assert!(report.is_ok(), "{}", report.unwrap_err());
    }
}

/// `Event::FamilyRevoked` is documented as sent for every family revoked "on request, by
/// subject/client, by cap eviction, or for reuse"; revoking by subject or by client must
/// announce each family it revokes, as revoking one family does.
#[test]
fn revoking_a_subject_announces_each_family_it_revokes() {
    let fx = Fixture::new();
    let db = &fx.db;
    let events = db.subscribe();
    let a = db.issue_refresh(&grant(0, 0)).unwrap();
    let b = db.issue_refresh(&grant(0, 1)).unwrap();
    let c = db.issue_refresh(&grant(1, 0)).unwrap();
    assert_eq!(db.revoke_subject(SUBJECTS[0], None).unwrap(), revoked(2, 0));
    let mut seen: Vec<Event> = events.try_iter().collect();
    let mut want = vec![
        Event::FamilyRevoked {
            family: a.family,
            reason: RevokeReason::Subject,
        },
        Event::FamilyRevoked {
            family: b.family,
            reason: RevokeReason::Subject,
        },
    ];
    let key = |e: &Event| format!("{e:?}");
    seen.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(seen, want, "revoke_subject");

    assert_eq!(db.revoke_client(CLIENTS[0]).unwrap(), revoked(1, 0));
    assert_eq!(
        events.try_iter().collect::<Vec<_>>(),
        vec![Event::FamilyRevoked {
            family: c.family,
            reason: RevokeReason::Client,
        }],
        "revoke_client"
    );
}

/// The sweeper deletes only what has expired (design §6), so a sweep may turn an expired or
/// revoked token's answer into "unknown", never an active one's. An access token tied to a
/// family is capped at the family's deadline when issued, so it cannot outlive the family: when
/// the sweeper deletes an idle-expired family, its access tokens have expired already.
#[test]
fn a_sweep_never_changes_the_answer_for_an_active_token() {
    let fx = Fixture::new(); // refresh 90 d / 14 d idle, access tokens 60 min
    let db = &fx.db;
    let issued = db.issue_refresh(&grant(0, 0)).unwrap();
    fx.advance(14 * DAY - 10 * MINUTE);
    let access = db.issue_access_for_family(issued.family, None).unwrap();
    // Capped at the family's idle deadline, not its own 60 minutes.
    assert_eq!(access.expires.at_ms, T0 + 14 * DAY);
    fx.advance(20 * MINUTE);
    assert_eq!(
        db.validate(issued.token.expose()).unwrap().status,
        TokenStatus::ExpiredIdle
    );
    let before = db.validate(access.token.expose()).unwrap().status;
    let report = db.sweep_now(None).unwrap();
    assert_eq!(report.families, 1, "the idle-expired family is swept");
    let after = db.validate(access.token.expose()).unwrap().status;
    assert!(
        after == before || (before != TokenStatus::Active && after == TokenStatus::Unknown),
        "a sweep turned {before:?} into {after:?}"
    );
}
