use super::*;
use tokendb_core::MasterKey;

fn digest(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

#[test]
fn open_refusals_are_distinct_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tdb");
    let master = MasterKey::generate();
    assert!(matches!(
        Store::open(&path, &master, StoreOptions::default()),
        Err(StoreError::NotFound(_))
    ));
    Store::create(&path, &master, StoreOptions::default())
        .unwrap()
        .close()
        .unwrap();
    assert!(matches!(
        Store::create(&path, &master, StoreOptions::default()),
        Err(StoreError::AlreadyExists(_))
    ));

    let before = digest(&path);
    let err = Store::open(&path, &MasterKey::generate(), StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::WrongMasterKey), "{err}");
    assert!(err.to_string().contains("wrong master key"));
    assert_eq!(
        digest(&path),
        before,
        "a refused open must leave the file untouched"
    );

    // Not a redb file at all.
    let junk = dir.path().join("junk.tdb");
    std::fs::write(&junk, b"hello, I am a text file\n").unwrap();
    assert!(matches!(
        Store::open(&junk, &master, StoreOptions::default()),
        Err(StoreError::NotATokenDb(_))
    ));
    assert_eq!(std::fs::read(&junk).unwrap(), b"hello, I am a text file\n");
    let empty = dir.path().join("empty.tdb");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Store::open(&empty, &master, StoreOptions::default()),
        Err(StoreError::NotATokenDb(_))
    ));

    // A redb file that is not tokendb's.
    let other = dir.path().join("other.redb");
    {
        let db = redb::Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("stuff"))
            .unwrap()
            .insert("a", 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = digest(&other);
    assert!(matches!(
        Store::open(&other, &master, StoreOptions::default()),
        Err(StoreError::NotATokenDb(_))
    ));
    assert_eq!(digest(&other), before);

    // A newer format version.
    let set_version = |v: u32| {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::META)
            .unwrap()
            .insert("format_version", v.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    };
    set_version(meta::FORMAT_VERSION + 1);
    let before = digest(&path);
    let err = Store::open(&path, &master, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerFormat { found, supported }
                if found == meta::FORMAT_VERSION + 1 && supported == meta::FORMAT_VERSION
        ),
        "{err}"
    );
    assert_eq!(digest(&path), before);
    // A file of the format before this one (access tokens keyed differently) is refused, not
    // misread.
    set_version(1);
    let before = digest(&path);
    let err = Store::open(&path, &master, StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::OlderFormat { found: 1, supported } if supported == meta::FORMAT_VERSION),
        "{err}"
    );
    assert_eq!(digest(&path), before);
}

#[test]
fn second_open_is_locked_and_close_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tdb");
    let master = MasterKey::generate();
    let store = Store::create(&path, &master, StoreOptions::default()).unwrap();
    assert!(matches!(
        Store::open(&path, &master, StoreOptions::default()),
        Err(StoreError::Locked)
    ));
    store.close().unwrap();
    store.close().unwrap();
    assert!(matches!(
        store.family(&tokendb_core::FamilyId::generate()),
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        tokendb_backend::Pending::start(|done| store.submit(Op::Sweep { limit: 1 }, 0, done))
            .wait(),
        Err(StoreError::Closed)
    ));
    Store::open(&path, &master, StoreOptions::default()).unwrap();
}

#[test]
fn master_key_rotation_rewraps_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tdb");
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let store = Store::create(&path, &old, StoreOptions::default()).unwrap();
    assert!(matches!(
        store.rotate_master_key(&new, &new),
        Err(StoreError::WrongMasterKey)
    ));
    store.rotate_master_key(&old, &new).unwrap();
    store.close().unwrap();
    assert!(matches!(
        Store::open(&path, &old, StoreOptions::default()),
        Err(StoreError::WrongMasterKey)
    ));
    Store::open(&path, &new, StoreOptions::default()).unwrap();
}

/// The replay cache: a proof is new once until its deadline, also after a reopen; a due entry is
/// replaced, and the sweep deletes it; `stats` counts and `verify` accepts what it keeps. A file
/// written before the cache existed has no `proofs` table until its first write.
#[test]
fn proofs_are_remembered_until_their_deadline_and_swept() {
    use tokendb_backend::{Backend, Pending};
    use tokendb_core::ProofId;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tdb");
    let master = MasterKey::generate();
    Store::create(&path, &master, StoreOptions::default())
        .unwrap()
        .close()
        .unwrap();
    // As a file of an earlier build: no `proofs` table.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(tables::PROOFS).unwrap());
        txn.commit().unwrap();
    }
    let store = Store::open(&path, &master, StoreOptions::default()).unwrap();
    assert_eq!(store.stats(0, &[]).unwrap().proofs, 0);
    assert_eq!(store.verify(10).unwrap().problems, vec![]);
    let remember = |store: &Store, id: ProofId, deadline: u64, now: u64| {
        Pending::start(|done| store.remember_proof(id, deadline, now, done))
            .wait()
            .unwrap()
    };
    let a = ProofId::from_bytes([1; 32]);
    let b = ProofId::from_bytes([2; 32]);
    assert!(remember(&store, a, 1_000, 100), "new");
    assert!(!remember(&store, a, 1_000, 200), "seen");
    assert!(
        !remember(&store, a, 5_000, 999),
        "seen, whatever deadline it comes with"
    );
    assert!(remember(&store, b, 1_000, 100), "another proof");
    let c = ProofId::from_bytes([3; 32]);
    assert!(
        remember(&store, c, 50, 100),
        "already outside its window: not stored"
    );
    store.close().unwrap();

    let store = Store::open(&path, &master, StoreOptions::default()).unwrap();
    assert!(
        !remember(&store, a, 1_000, 300),
        "still seen after a reopen"
    );
    assert_eq!(store.stats(300, &[]).unwrap().proofs, 2);
    assert_eq!(store.verify(10).unwrap().problems, vec![]);
    // Due but not swept: it counts as gone, and is remembered again with the new deadline.
    assert!(remember(&store, a, 2_000, 1_000));
    assert!(!remember(&store, a, 2_000, 1_500));
    assert_eq!(store.verify(10).unwrap().problems, vec![]);
    let swept = Pending::start(|done| store.sweep(100, 1_500, done))
        .wait()
        .unwrap();
    assert_eq!(swept.proofs, 1, "b is due at 1,000; a lives until 2,000");
    assert_eq!(store.stats(1_500, &[]).unwrap().proofs, 1);
    assert!(!remember(&store, a, 2_000, 1_600));
    let swept = Pending::start(|done| store.sweep(100, 2_000, done))
        .wait()
        .unwrap();
    assert_eq!(swept.proofs, 1);
    assert_eq!(store.stats(2_000, &[]).unwrap().proofs, 0);
    assert_eq!(store.verify(10).unwrap().problems, vec![]);
    store.close().unwrap();
}

/// Token-index entries name a token by deadline and an 8-byte id prefix. Two tokens of one
/// millisecond whose ids share the prefix (1 in 2^64 per pair) are both found by their own
/// subject, and revoking one subject never revokes the other's token: whether the entries were
/// merged from `recent_tokens` or written by a batch.
#[test]
fn tokens_sharing_an_index_prefix_are_revoked_by_their_own_subject_only() {
    use tokendb_backend::{Backend, Pending};
    use tokendb_core::{
        AccessKey, AccessRecord, RecordBody, RecordState, RevokeReason, Scope, TokenId,
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        writer: WriterOptions::DEFAULT.with_merge_at(2),
        ..StoreOptions::default()
    };
    let store = Store::create(dir.path().join("t.tdb"), &MasterKey::generate(), opts).unwrap();
    let keys = store.shared.keys();
    let record = |key: &AccessKey, subject: &str| {
        let body = RecordBody {
            subject: subject.into(),
            client_id: "app".into(),
            scope: Scope::parse("openid").unwrap(),
            claims: Vec::new(),
        };
        let (key_id, sealed) = AccessRecord::seal_body(&keys, key, &body).unwrap();
        AccessRecord {
            key_id,
            state: RecordState::Active,
            family: None,
            subject: keys.subject_hash(subject),
            client: keys.client_hash("app"),
            issued_at: 0,
            deadline: key.deadline,
            body: sealed,
            confirmation: None,
        }
    };
    // Ids equal in their first 8 bytes, under one deadline.
    let key = |deadline: u64, last: u8| {
        let mut id = [7u8; 32];
        id[31] = last;
        AccessKey {
            deadline,
            id: TokenId::from_bytes(id),
        }
    };
    let (a1, b1) = (key(10_000, 1), key(10_000, 2));
    let (a2, b2) = (key(20_000, 1), key(20_000, 2));
    for (k, s) in [(a1, "alice"), (b1, "bob")] {
        // One by one: recent entries, merged after the second (`merge_at` 2).
        Pending::start(|done| store.issue_access(k, record(&k, s), 0, done))
            .wait()
            .unwrap();
    }
    Pending::start(|done| {
        store.issue_access_batch(
            vec![(a2, record(&a2, "alice")), (b2, record(&b2, "bob"))],
            0,
            done,
        )
    })
    .wait()
    .unwrap();
    assert_eq!(store.verify(10).unwrap().problems, vec![]);
    let r = Pending::start(|done| store.revoke_subject(keys.subject_hash("alice"), None, 1, done))
        .wait()
        .unwrap();
    assert_eq!(r.tokens, 2);
    for (k, revoked) in [(a1, true), (b1, false), (a2, true), (b2, false)] {
        let state = store.token(&k).unwrap().unwrap().state;
        assert_eq!(
            state
                == (RecordState::Revoked {
                    reason: RevokeReason::Subject,
                    at: 1
                }),
            revoked,
            "{k:?}"
        );
    }
    store.close().unwrap();
}
