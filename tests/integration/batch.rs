//! Bulk issue (`TokenDb::issue_access_batch`): the same tokens as `issue_access`, in the order
//! of the grants, all or nothing, in one durable commit, up to `MAX_ACCESS_BATCH` grants.

use crate::common::file;
use crate::common::{Contents, Fixture, HOUR, T0, records};
use tokendb::{
    Error, Grant, MAX_ACCESS_BATCH, MasterKey, RevokeReason, Scope, StoreError, TokenDb,
    TokenStatus,
};
#[allow(unused_imports)]
use tokendb_backend::Backend as _;
use tokendb_core::{
    AccessKey, AccessRecord, AccessToken, CoreError, FamilyId, KeyId, RecordBody, RecordState,
};

/// Grants that differ in every field: subject, client, scope and claims.
fn grants(n: usize) -> Vec<Grant> {
    (0..n)
        .map(|i| {
            Grant::new(
                format!("user-{i}"),
                format!("client-{}", i % 7),
                if i % 2 == 0 { "openid" } else { "api read" },
            )
            .unwrap()
            .with_claims(format!("claims of {i}").into_bytes())
        })
        .collect()
}

/// Every token of `issued` is active and introspects to its grant, position for position.
fn assert_issued_for(db: &TokenDb, issued: &[tokendb::IssuedAccess], grants: &[Grant]) {
    assert_eq!(issued.len(), grants.len());
    for (i, (a, g)) in issued.iter().zip(grants).enumerate() {
        assert!(a.token.expose().starts_with("tdb_at_"), "{i}");
        assert_eq!(a.scope, g.scope, "{i}");
        let v = db.validate(a.token.expose()).unwrap();
        assert_eq!(v.status, TokenStatus::Active, "{i}");
        assert_eq!(v.expires, Some(a.expires), "{i}");
        let info = db.introspect(a.token.expose()).unwrap();
        assert!(info.is_active(), "{i}");
        assert_eq!(info.sub(), Some(g.subject.as_str()), "{i}");
        assert_eq!(info.client_id(), Some(g.client_id.as_str()), "{i}");
        assert_eq!(info.scope(), Some(&g.scope), "{i}");
        assert_eq!(info.extra(), Some(&g.claims[..]), "{i}");
        assert_eq!(info.family(), None, "{i}");
    }
}

#[test]
fn a_batch_issues_every_grant_in_order_in_one_commit() {
    let f = Fixture::new();
    let gs = grants(500);
    let before = f.db.commits();
    let issued = f.db.issue_access_batch(&gs).unwrap();
    assert_eq!(f.db.commits() - before, 1, "one durable commit");
    assert_issued_for(&f.db, &issued, &gs);
    // Issued at one instant, with issue_access's lifetime.
    let single = f.db.issue_access(&gs[0]).unwrap();
    for a in &issued {
        assert_eq!(a.expires.at_ms, T0 + HOUR);
        assert_eq!(a.expires, single.expires);
    }
    let distinct: std::collections::HashSet<&str> =
        issued.iter().map(|a| a.token.expose()).collect();
    assert_eq!(distinct.len(), issued.len());
    // Stored exactly as issue_access stores a token: record and both revoke-all entries.
    let c = Contents::read(file(&f.db));
    assert_eq!(c.tokens.len(), 501);
    c.assert_exact();
    let empty_before = f.db.commits();
    assert!(f.db.issue_access_batch(&[]).unwrap().is_empty());
    assert_eq!(
        f.db.commits(),
        empty_before,
        "an empty batch commits nothing"
    );
}

#[test]
fn batch_tokens_are_revoked_expired_and_swept_like_single_ones() {
    let f = Fixture::new();
    let gs = grants(70);
    let issued = f.db.issue_access_batch(&gs).unwrap();
    // "client-3" holds grants 3, 10, 17, ...: revoking the client finds them through the index.
    let r = f.db.revoke_client("client-3").unwrap();
    assert_eq!(r.tokens, 10);
    let r = f.db.revoke_subject("user-4", None).unwrap();
    assert_eq!(r.tokens, 1);
    let r = f.db.revoke(issued[5].token.expose()).unwrap();
    assert_eq!(r.tokens, 1);
    for (i, a) in issued.iter().enumerate() {
        let want = if i % 7 == 3 {
            TokenStatus::Revoked(RevokeReason::Client)
        } else if i == 4 {
            TokenStatus::Revoked(RevokeReason::Subject)
        } else if i == 5 {
            TokenStatus::Revoked(RevokeReason::Requested)
        } else {
            TokenStatus::Active
        };
        assert_eq!(f.db.validate(a.token.expose()).unwrap().status, want, "{i}");
    }
    f.advance(HOUR);
    assert_eq!(
        f.db.validate(issued[0].token.expose()).unwrap().status,
        TokenStatus::ExpiredAbsolute
    );
    let swept = f.db.sweep_now(None).unwrap();
    assert_eq!(swept.tokens, 70);
    f.advance(HOUR);
    f.db.sweep_now(None).unwrap();
    assert!(Contents::read(file(&f.db)).is_empty());
}

#[test]
fn a_bad_grant_anywhere_fails_the_whole_batch_and_writes_nothing() {
    let f = Fixture::new();
    let file_before = std::fs::read(f.path()).unwrap();
    let commits = f.db.commits();
    type Spoil = fn(&mut Grant);
    let cases: [(usize, Spoil); 3] = [
        (299, |g| g.claims = vec![b'x'; 16 * 1024 + 1]), // the last grant
        (120, |g| g.client_id = "a\nb".into()),
        (0, |g| g.subject = String::new()),
    ];
    for (at, spoil) in cases {
        let mut gs = grants(300);
        spoil(&mut gs[at]);
        let err = f.db.issue_access_batch(&gs).unwrap_err();
        let Error::BatchItem { index, error } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*index, at);
        // The error issue_access gives for that grant alone.
        let alone = f.db.issue_access(&gs[at]).unwrap_err();
        assert_eq!(error.to_string(), alone.to_string());
        assert!(matches!(
            **error,
            Error::InvalidInput(CoreError::TooLarge { .. } | CoreError::BadText(_))
        ));
        assert_eq!(err.oauth_error(), "invalid_request");
        assert!(
            err.to_string()
                .contains(&format!("grant {at} of the batch")),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
    assert_eq!(f.db.commits(), commits, "nothing was submitted");
    assert_eq!(records(&f.db), 0);
    assert_eq!(
        std::fs::read(f.path()).unwrap(),
        file_before,
        "a refused batch wrote to the file"
    );
}

#[test]
fn the_batch_size_is_limited_and_the_limit_itself_is_accepted() {
    let f = Fixture::on_tmpfs(|b| b);
    let gs = grants(MAX_ACCESS_BATCH + 1);
    let err = f.db.issue_access_batch(&gs).unwrap_err();
    assert!(
        matches!(err, Error::BatchTooLarge { len, max } if len == MAX_ACCESS_BATCH + 1 && max == MAX_ACCESS_BATCH),
        "{err:?}"
    );
    assert_eq!(err.oauth_error(), "invalid_request");
    assert!(err.to_string().contains("split it"), "{err}");
    assert_eq!(records(&f.db), 0);

    let issued = f.db.issue_access_batch(&gs[..MAX_ACCESS_BATCH]).unwrap();
    assert_eq!(issued.len(), MAX_ACCESS_BATCH);
    assert_eq!(records(&f.db), MAX_ACCESS_BATCH);
    // Spot checks: the ends and a few in between still match their grants by position.
    for i in [0, 1, 4_999, MAX_ACCESS_BATCH - 1] {
        assert_issued_for(&f.db, &issued[i..=i], &gs[i..=i]);
    }
    Contents::read(file(&f.db)).assert_exact();
}

#[test]
fn a_batch_survives_close_and_reopen() {
    let f = Fixture::new();
    let gs = grants(200);
    let issued = f.db.issue_access_batch(&gs).unwrap();
    f.db.close().unwrap();
    assert!(matches!(
        f.db.issue_access_batch(&gs),
        Err(Error::Store(StoreError::Closed))
    ));
    assert!(matches!(
        f.db.issue_access_batch(&[]),
        Err(Error::Store(StoreError::Closed))
    ));
    let config = Fixture::base(&f.clock).build().unwrap();
    let db = TokenDb::open(f.path(), &f.master, config).unwrap();
    assert_issued_for(&db, &issued, &gs);
    Contents::read(file(&db)).assert_exact();
    db.close().unwrap();
    // And only under its master key.
    let config = Fixture::base(&f.clock).build().unwrap();
    assert!(TokenDb::open(f.path(), &MasterKey::generate(), config).is_err());
}

/// A record for the store-level op, built as `TokenDb` builds one.
fn record(
    db: &TokenDb,
    subject: &str,
    deadline: u64,
    family: Option<FamilyId>,
) -> (AccessKey, AccessRecord) {
    let keys = file(db).keys();
    let token = AccessToken::mint(deadline);
    let id = keys.access_key(&token);
    let body = RecordBody {
        subject: subject.into(),
        client_id: "importer".into(),
        scope: Scope::parse("api").unwrap(),
        claims: Vec::new(),
    };
    let (key_id, sealed) = AccessRecord::seal_body(&keys, &id, &body).unwrap();
    let rec = AccessRecord {
        key_id,
        state: RecordState::Active,
        family,
        subject: keys.subject_hash(subject),
        client: keys.client_hash("importer"),
        issued_at: T0,
        deadline,
        body: sealed,
        confirmation: None,
    };
    (id, rec)
}

/// The writer applies a batch op in one transaction and drops all of it when its last entry
/// fails (here: one that does not encode, applied last since it sorts last), when one is tied to
/// a family, or when it is over the limit; a neighbour op in the same commit is unaffected.
#[test]
fn the_store_op_is_all_or_nothing_even_when_its_last_entry_fails() {
    let f = Fixture::new();
    let good: Vec<_> = (0..50)
        .map(|i| record(&f.db, &format!("s{i}"), T0 + HOUR, None))
        .collect();
    let mut bad = record(&f.db, "last", T0 + 2 * HOUR, None);
    bad.1.key_id = KeyId(999); // no such sealing key: fails in the writer, when written
    let mut tokens = good.clone();
    tokens.push(bad);
    let err = tokendb::Pending::start(|done| file(&f.db).issue_access_batch(tokens, T0, done))
        .wait()
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Invalid(CoreError::UnknownKeyId(999))
                | StoreError::Corrupt(CoreError::UnknownKeyId(999))
        ),
        "{err:?}"
    );
    assert!(
        Contents::read(file(&f.db)).is_empty(),
        "a torn batch was kept"
    );

    let rt = f.db.issue_refresh(&grants(1)[0]).unwrap();
    let mut tied = good.clone();
    tied.push(record(&f.db, "tied", T0 + HOUR, Some(rt.family)));
    let oversized: Vec<_> = (0..=MAX_ACCESS_BATCH).map(|_| good[0].clone()).collect();
    for tokens in [tied, oversized] {
        let err = tokendb::Pending::start(|done| file(&f.db).issue_access_batch(tokens, T0, done))
            .wait()
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(CoreError::BadField(_))),
            "{err:?}"
        );
    }
    // The same key twice in one batch is a collision, refused as a whole.
    let mut tokens = good.clone();
    tokens.push(good[7].clone());
    assert!(
        tokendb::Pending::start(|done| file(&f.db).issue_access_batch(tokens, T0, done))
            .wait()
            .is_err()
    );
    let c = Contents::read(file(&f.db));
    assert_eq!((c.families.len(), c.tokens.len()), (1, 0));

    // The good entries alone go through; a second copy of them is refused as a collision,
    // while a single issue submitted at the same time lands (in that commit or the next).
    let out =
        tokendb::Pending::start(|done| file(&f.db).issue_access_batch(good.clone(), T0, done))
            .wait()
            .unwrap();
    assert!(out == 50, "{out:?}");
    let (again, single) = std::thread::scope(|s| {
        let again = s.spawn(|| {
            tokendb::Pending::start(|done| file(&f.db).issue_access_batch(good.clone(), T0, done))
                .wait()
        });
        let single = s.spawn(|| f.db.issue_access(&grants(1)[0]));
        (again.join().unwrap(), single.join().unwrap())
    });
    assert!(
        matches!(again, Err(StoreError::Invalid(CoreError::BadField(_)))),
        "{again:?}"
    );
    single.unwrap();
    let c = Contents::read(file(&f.db));
    assert_eq!(c.tokens.len(), 51);
    c.assert_exact();
}
