//! Sweeper behaviour that depends on the redb file's layout: a `deadlines` entry edited in the
//! file behind the engine's back, and the deadline-bucketed token indexes. The rest of the
//! sweeper's promises (`sweeper.rs`) run on both backends.

use crate::common::file;
use crate::common::{Contents, DAY, Fixture, HOUR, MINUTE, T0, grant};
use std::sync::Arc;
use std::time::Duration;
use tokendb::{ConfigBuilder, ManualClock, RevokeReason, TokenDb, TokenStatus};
use tokendb_store::{Entry, IndexEntry};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn status(db: &TokenDb, token: &str) -> TokenStatus {
    db.validate(token).unwrap().status
}

fn sweep(db: &TokenDb) -> (u64, u64) {
    let r = db.sweep_now(None).unwrap();
    (r.families, r.tokens)
}

/// The key of a `deadlines` entry, as `tokendb-store` lays it out (deadline, kind, 40-byte id
/// slot; family ids zero-padded).
fn deadline_key(deadline: u64, entry: &Entry) -> [u8; 49] {
    let mut k = [0u8; 49];
    k[..8].copy_from_slice(&deadline.to_be_bytes());
    match entry {
        Entry::Family(f) => {
            k[8] = 1;
            k[9..25].copy_from_slice(f.as_bytes());
        }
        Entry::Token(t) => {
            k[8] = 2;
            k[9..].copy_from_slice(&t.to_bytes());
        }
        Entry::Grace(..) | Entry::Proof(_) => unreachable!("not used here"),
    }
    k
}

const DEADLINES: redb::TableDefinition<'_, &[u8; 49], ()> = redb::TableDefinition::new("deadlines");

fn reuse_config(clock: &Arc<ManualClock>) -> ConfigBuilder {
    Fixture::base(clock)
        .refresh_lifetime(ms(30 * DAY), ms(DAY))
        .dangerous_non_rotating_refresh_tokens(ms(MINUTE))
}

/// The store keeps the index exact on every write, so a lagging entry cannot come from the API.
/// It is made here the honest way: a use slides the family's idle deadline (a `ReUse` slide),
/// then the file is edited directly to put the entry back where it was before the use — what a
/// lazily indexed writer, or an older build, would leave. Entries whose record is gone are
/// added too, and an access-token entry (access tokens are keyed by their deadline and never
/// filed in `deadlines`). The sweeper must re-file the first kind, drop the others, and delete
/// nothing before its real deadline.
#[test]
fn an_entry_whose_record_lives_longer_is_refiled_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.tdb");
    let clock = Arc::new(ManualClock::new(T0));
    let master = tokendb::MasterKey::generate();
    let db = TokenDb::create(&path, &master, reuse_config(&clock).build().unwrap()).unwrap();

    let fam = db.issue_refresh(&grant(1)).unwrap();
    assert_eq!(fam.idle.at_ms, T0 + DAY);
    clock.advance(12 * HOUR);
    let slid = db.rotate(fam.token.expose(), "client-1", None).unwrap();
    assert_eq!(slid.token, fam.token, "non-rotating: the same token");
    assert_eq!(slid.idle.at_ms, T0 + 36 * HOUR);
    let access = db.issue_access(&grant(2)).unwrap();
    assert_eq!(access.expires.at_ms, T0 + 13 * HOUR);
    Contents::read(file(&db)).assert_exact();
    db.close().unwrap();

    {
        let raw = redb::Database::open(&path).unwrap();
        let txn = raw.begin_write().unwrap();
        {
            let mut t = txn.open_table(DEADLINES).unwrap();
            let f = Entry::Family(fam.family);
            assert!(
                t.remove(&deadline_key(T0 + 36 * HOUR, &f))
                    .unwrap()
                    .is_some()
            );
            t.insert(&deadline_key(T0 + DAY, &f), ()).unwrap();
            let ghost_f = Entry::Family(tokendb::FamilyId::generate());
            let ghost_t = Entry::Token(tokendb_core::AccessKey {
                deadline: T0 + 12 * HOUR + 30 * MINUTE,
                id: tokendb_core::TokenId::from_bytes([7; 32]),
            });
            t.insert(&deadline_key(T0 + 12 * HOUR + 30 * MINUTE, &ghost_f), ())
                .unwrap();
            t.insert(&deadline_key(T0 + 12 * HOUR + 30 * MINUTE, &ghost_t), ())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    let db = TokenDb::open(&path, &master, reuse_config(&clock).build().unwrap()).unwrap();
    assert!(!Contents::read(file(&db)).index_problems().is_empty());
    clock.advance(30 * MINUTE); // T0 + 12 h 30 min: the ghosts
    let r = db.sweep_now(None).unwrap();
    assert_eq!((r.families, r.tokens, r.refiled), (0, 0, 0), "{r:?}");
    assert!(db.validate(access.token.expose()).unwrap().is_active());
    let c = Contents::read(file(&db));
    let problems = c.index_problems();
    assert_eq!(
        problems.len(),
        1,
        "only the family's entry lags: {problems:?}"
    );

    clock.set(T0 + DAY); // the family's stale entry; its record says T0 + 36 h
    assert!(
        db.validate(fam.token.expose()).unwrap().is_active(),
        "the record, not the index, decides"
    );
    let r = db.sweep_now(None).unwrap();
    assert_eq!((r.families, r.tokens, r.refiled), (0, 1, 1), "{r:?}");
    assert!(db.validate(fam.token.expose()).unwrap().is_active());
    let c = Contents::read(file(&db));
    c.assert_exact();
    assert!(c.index.contains(&IndexEntry::Deadline(
        T0 + 36 * HOUR,
        Entry::Family(fam.family)
    )));

    clock.set(T0 + 36 * HOUR);
    assert_eq!(sweep(&db), (1, 0));
    assert!(Contents::read(file(&db)).is_empty());
    let m = db.sweeper_metrics();
    assert_eq!(
        (m.passes, m.families_deleted, m.tokens_deleted, m.refiled),
        (3, 1, 1, 1)
    );
}

/// Standalone access tokens are swept as a run of keys; their subject and client index entries
/// go with their deadline bucket once it has ended (never while a token they name is alive),
/// or at once while they are still recent (not merged), and revoking a subject finds tokens in
/// every bucket and among the recent ones.
#[test]
fn token_index_entries_go_with_their_bucket_and_revocation_sees_every_bucket() {
    let bucket = 1u64 << tokendb_store::BUCKET_SHIFT;
    let fx = Fixture::with(|b| b.access_lifetime(ms(10 * MINUTE)));
    let db = &fx.db;
    // Three generations of tokens of two subjects, in different deadline buckets: subject 1's
    // issued one by one (recent entries), subject 2's in batches (straight into the indexes).
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(db.issue_access(&grant(1)).unwrap());
        tokens.extend(db.issue_access_batch(&[grant(2)]).unwrap());
        fx.advance(3 * bucket);
    }
    let c = Contents::read(file(db));
    c.assert_exact();
    let token_entries = |c: &Contents| {
        c.index
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    IndexEntry::Subject(_, Entry::Token(_))
                        | IndexEntry::Client(_, Entry::Token(_))
                )
            })
            .count()
    };
    assert_eq!(token_entries(&c), 12);

    // The first pair expired: swept; the recent entries of subject 1's token go with it, the
    // indexed entries of subject 2's stay until its bucket ends, then go.
    fx.set(T0 + 10 * MINUTE);
    assert_eq!(sweep(db), (0, 2));
    let c = Contents::read(file(db));
    c.assert_exact();
    let first_bucket_end = (T0 + 10 * MINUTE) / bucket * bucket + bucket;
    if first_bucket_end > T0 + 10 * MINUTE + 1 {
        assert_eq!(token_entries(&c), 10, "the bucket has not ended");
    }
    fx.set(first_bucket_end);
    db.sweep_now(None).unwrap();
    let c = Contents::read(file(db));
    c.assert_exact();
    assert_eq!(
        token_entries(&c),
        8,
        "the first bucket's entries were dropped"
    );

    // Revoking subject 1 revokes its live tokens in both remaining buckets, not subject 2's.
    let r = db.revoke_subject("sub-1", None).unwrap();
    assert_eq!((r.families, r.tokens), (0, 2));
    for (i, t) in tokens.iter().enumerate().skip(2) {
        let want_revoked = i % 2 == 0;
        assert_eq!(
            status(db, t.token.expose()) == TokenStatus::Revoked(RevokeReason::Subject),
            want_revoked,
            "token {i}"
        );
    }

    // Everything expires: records and entries are gone once the last bucket ends.
    fx.set(T0 + 2 * HOUR);
    db.sweep_now(None).unwrap();
    assert!(Contents::read(file(db)).is_empty());
}

/// Standalone access tokens issued one by one wait in `recent_tokens` and are merged into the
/// bucketed subject and client indexes once `merge_at` of them wait. Before and after a merge
/// the file holds exactly one subject and one client entry per token, and revocation by subject
/// and by client finds merged and recent tokens alike.
#[test]
fn recent_index_entries_are_merged_and_revocation_finds_both() {
    let fx = Fixture::with(|b| b.writer(tokendb::WriterOptions::DEFAULT.with_merge_at(4)));
    let db = &fx.db;
    // grant(i): subject `sub-{i}`, client `client-{i % 3}`; subjects 0..5 twice each.
    let issued: Vec<_> = (0..10)
        .map(|i| db.issue_access(&grant(i % 5)).unwrap())
        .collect();
    let c = Contents::read(file(db));
    c.assert_exact();
    // One at a time, each issue is its own batch: merged after the 4th and the 8th.
    db.close().unwrap();
    {
        let raw = redb::Database::open(fx.path()).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&raw).unwrap();
        let len = |name: &str| {
            use redb::ReadableTableMetadata as _;
            match name {
                "recent_tokens" => txn
                    .open_table(redb::TableDefinition::<&[u8; 40], &[u8; 32]>::new(name))
                    .unwrap()
                    .len()
                    .unwrap(),
                _ => txn
                    .open_table(redb::TableDefinition::<&[u8; 36], ()>::new(name))
                    .unwrap()
                    .len()
                    .unwrap(),
            }
        };
        assert_eq!(len("recent_tokens"), 2);
        assert_eq!(len("subject_tokens.v3"), 8);
        assert_eq!(len("client_tokens.v3"), 8);
    }
    let db = fx
        .reopen(
            Fixture::base(&fx.clock)
                .writer(tokendb::WriterOptions::DEFAULT.with_merge_at(4))
                .build()
                .unwrap(),
        )
        .unwrap();
    // sub-3: tokens 3 (merged) and 8 (recent).
    let r = db.revoke_subject("sub-3", None).unwrap();
    assert_eq!(r.tokens, 2);
    // client-1: the grants of sub-1 and sub-4, tokens 1, 4, 6 and 9 (the last one recent).
    let r = db.revoke_client("client-1").unwrap();
    let want: Vec<usize> = (0..10).filter(|i| (i % 5) % 3 == 1).collect();
    assert_eq!(r.tokens, want.len() as u64);
    for (i, t) in issued.iter().enumerate() {
        let want = if i % 5 == 3 {
            TokenStatus::Revoked(RevokeReason::Subject)
        } else if (i % 5) % 3 == 1 {
            TokenStatus::Revoked(RevokeReason::Client)
        } else {
            TokenStatus::Active
        };
        assert_eq!(status(&db, t.token.expose()), want, "token {i}");
    }
    Contents::read(file(&db)).assert_exact();
    // Everything expires: merged and recent entries go with their tokens.
    fx.set(T0 + 2 * HOUR);
    db.sweep_now(None).unwrap();
    fx.set(T0 + 3 * HOUR);
    db.sweep_now(None).unwrap();
    assert!(Contents::read(file(&db)).is_empty());
}

/// `compact` rewrites the per-token tables in key order: every token still validates,
/// revocation by subject and client still finds merged and recent tokens, and the file
/// verifies clean.
#[test]
fn compaction_repacks_and_keeps_every_token_findable() {
    let fx = Fixture::with(|b| b.writer(tokendb::WriterOptions::DEFAULT.with_merge_at(8)));
    let db = &fx.db;
    let mut issued: Vec<_> = (0..10)
        .map(|i| db.issue_access(&grant(i % 5)).unwrap())
        .collect();
    issued.extend(
        db.issue_access_batch(&(10..20).map(grant).collect::<Vec<_>>())
            .unwrap(),
    );
    db.compact().unwrap();
    Contents::read(file(db)).assert_exact();
    assert!(db.verify(100).unwrap().is_clean());
    for t in &issued {
        assert_eq!(status(db, t.token.expose()), TokenStatus::Active);
    }
    // sub-2: tokens 2 (merged at the 8th issue) and 7 (recent); sub-12: token 12 (batch).
    assert_eq!(db.revoke_subject("sub-2", None).unwrap().tokens, 2);
    assert_eq!(db.revoke_subject("sub-12", None).unwrap().tokens, 1);
    // client-0: tokens 0, 3, 5 and 8 (grants 0 and 3), and 15 and 18 of the batch (12 is
    // revoked already).
    assert_eq!(db.revoke_client("client-0").unwrap().tokens, 6);
}
