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
