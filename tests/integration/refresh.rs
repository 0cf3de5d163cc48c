//! The whole `refresh_token` grant in one durable write (`TokenDb::refresh`): what it returns,
//! that it costs one commit, and that a kill at any moment never leaves a family rotated
//! without the access token of that rotation.

use crate::common::{Backend, Contents, Fixture, SplitMix, grant, random_seed};
use crate::crash::{checking_config, kill_child, spawn_child};
use std::collections::BTreeMap;
use std::time::Duration;
use tokendb::{Clock, Error, MasterKey, RotateRefusal, Scope, SystemClock, TokenDb, TokenStatus};
#[allow(unused_imports)]
use tokendb_backend::Backend as _;
use tokendb_tests::place::Place;

#[test]
fn a_refresh_rotates_and_issues_its_access_token_in_one_commit() {
    let f = Fixture::new();
    let issued = f.db.issue_refresh(&grant(1)).unwrap();
    let client = grant(1).client_id;
    let narrow = Scope::parse("openid").unwrap();
    let before = f.db.commits();
    let r =
        f.db.refresh(issued.token.expose(), &client, Some(&narrow))
            .unwrap();
    assert_eq!(f.db.commits(), before + 1, "one durable write");
    assert_eq!(r.refresh.generation, 2);
    assert_eq!(r.access.scope, narrow);
    let info = f.db.introspect(r.access.token.expose()).unwrap();
    assert_eq!(info.family(), Some(issued.family));
    assert_eq!(info.scope(), Some(&narrow));
    assert_eq!(
        f.db.validate(issued.token.expose()).unwrap().status,
        TokenStatus::Rotated
    );

    // Reuse revokes the family and issues nothing; the access token goes with the family.
    assert!(matches!(
        f.db.refresh(issued.token.expose(), &client, None),
        Err(Error::Refused(RotateRefusal::ReuseDetected { .. }))
    ));
    assert!(matches!(
        f.db.validate(r.access.token.expose()).unwrap().status,
        TokenStatus::Revoked(_)
    ));
    let tokens = count_tokens(&f.db, &f.place);
    assert!(
        f.db.refresh(r.refresh.token.expose(), &client, None)
            .is_err()
    );
    assert_eq!(
        count_tokens(&f.db, &f.place),
        tokens,
        "a refused refresh issued a token"
    );
}

#[test]
fn a_retry_within_the_grace_period_gets_the_same_refresh_token_and_a_new_access_token() {
    let f = Fixture::with(|b| b.grace_period(Duration::from_secs(10)));
    let issued = f.db.issue_refresh(&grant(2)).unwrap();
    let client = grant(2).client_id;
    let first = f.db.refresh(issued.token.expose(), &client, None).unwrap();
    f.advance(1_000);
    let retry = f.db.refresh(issued.token.expose(), &client, None).unwrap();
    assert!(retry.refresh.replayed);
    assert_eq!(retry.refresh.token.expose(), first.refresh.token.expose());
    assert_ne!(retry.access.token.expose(), first.access.token.expose());
    assert!(
        f.db.validate(retry.access.token.expose())
            .unwrap()
            .is_active()
    );
}

fn count_tokens(db: &TokenDb, place: &Place) -> usize {
    Contents::of(db, place).tokens.len()
}

/// Acknowledged refreshes in the child's logs: family (hex) → highest generation.
fn acknowledged(logs: &std::path::Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(logs).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["Q", family, generation, _, _] = parts.as_slice() {
                let g: u64 = generation.parse().unwrap();
                let e = out.entry((*family).to_owned()).or_insert(0);
                *e = (*e).max(g);
            }
        }
    }
    out
}

#[test]
fn kills_never_leave_a_successor_without_its_access_token() {
    let seed = random_seed();
    println!("refresh crash: seed {seed} (set TOKENDB_TEST_SEED to reuse it)");
    let mut rng = SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let place = match crate::BACKEND {
        Backend::File => Place::File(dir.path().join("tokens.tdb")),
        Backend::Postgres => Place::fresh_postgres(),
    };
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let master = MasterKey::generate();
    place
        .create(&master, checking_config(SystemClock.now_ms()))
        .unwrap()
        .close()
        .unwrap();
    let extra = ["--refresh", "--access-ms", "3600000"];
    for round in 0..8 {
        let child = spawn_child(&place, &logs, &master, round, rng.next_u64(), &extra);
        std::thread::sleep(Duration::from_millis(rng.range(30, 250)));
        kill_child(child);
    }

    let db = place
        .open(&master, checking_config(SystemClock.now_ms()))
        .unwrap();
    let stored = Contents::of(&db, &place);
    let families: BTreeMap<_, _> = stored
        .families
        .iter()
        .map(|(id, rec)| (*id, (rec.generation, rec.rotated_at)))
        .collect();
    let mut issued_at = BTreeMap::<_, Vec<u64>>::new();
    for rec in stored.tokens.values() {
        if let Some(f) = rec.family {
            issued_at.entry(f).or_default().push(rec.issued_at);
        }
    }
    let mut rotated = 0;
    for (id, (generation, rotated_at)) in &families {
        if *generation > 1 {
            rotated += 1;
            assert!(
                issued_at.get(id).is_some_and(|t| t.contains(rotated_at)),
                "family {id} at generation {generation} has no access token of its last refresh"
            );
        }
        // Every refresh grant issues exactly one access token: one per generation after the
        // first (nothing here revokes or sweeps them).
        assert_eq!(
            issued_at.get(id).map_or(0, Vec::len) as u64,
            generation - 1,
            "family {id}"
        );
    }
    let acked = acknowledged(&logs);
    assert!(
        !acked.is_empty() && rotated > 0,
        "the child made no refresh"
    );
    for (family, generation) in &acked {
        let (_, (at, _)) = families
            .iter()
            .find(|(id, _)| id.to_string() == *family)
            .unwrap_or_else(|| panic!("acknowledged family {family} is gone"));
        assert!(
            at >= generation,
            "family {family}: {at} < acknowledged {generation}"
        );
    }
    println!(
        "refresh crash: 8 kills, {} families, {rotated} refreshed, {} acknowledged refreshes",
        families.len(),
        acked.len()
    );
    db.close().unwrap();
}
