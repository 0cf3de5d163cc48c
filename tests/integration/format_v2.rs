//! Files of format 2 (written before `recent_tokens` and the narrower token-index buckets of
//! format 3) still open, and their tokens still validate, revoke by subject and client, and
//! expire. `tests/fixtures/format_v2/tokens.tdb` was written by the last build of format 2
//! (commit 6359c52's parent) with the master key 0x42 × 32 under a manual clock; `tokens.txt`
//! holds its tokens by name, and the clock's time when it was closed.

use crate::common::{Fixture, HOUR};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokendb::{Grant, ManualClock, MasterKey, RevokeReason, TokenDb, TokenStatus};

struct Opened {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    clock: Arc<ManualClock>,
    db: TokenDb,
    tokens: BTreeMap<String, String>,
}

fn master() -> MasterKey {
    MasterKey::from_bytes([0x42; 32])
}

/// The format version a closed file records.
fn format_version(path: &std::path::Path) -> u32 {
    let raw = redb::Database::open(path).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&raw).unwrap();
    let meta = txn
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
        .unwrap();
    let v = redb::ReadableTable::get(&meta, "format_version")
        .unwrap()
        .unwrap();
    u32::from_be_bytes(v.value().try_into().unwrap())
}

/// A copy of the fixture (opening converts it), opened at the time it was closed.
fn open_fixture() -> Opened {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/format_v2");
    let text = std::fs::read_to_string(src.join("tokens.txt")).unwrap();
    let mut tokens = BTreeMap::new();
    for line in text.lines() {
        let (name, value) = line.split_once(' ').unwrap();
        tokens.insert(name.to_owned(), value.to_owned());
    }
    let now: u64 = tokens.remove("now").unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.tdb");
    std::fs::copy(src.join("tokens.tdb"), &path).unwrap();
    assert_eq!(format_version(&path), 2, "the fixture is a format 2 file");
    let clock = Arc::new(ManualClock::new(now));
    let db = TokenDb::open(&path, &master(), Fixture::base(&clock).build().unwrap()).unwrap();
    Opened {
        _dir: dir,
        path,
        clock,
        db,
        tokens,
    }
}

impl Opened {
    fn status(&self, name: &str) -> TokenStatus {
        self.db.validate(&self.tokens[name]).unwrap().status
    }
}

#[test]
fn format_2_file_opens_validates_and_revokes() {
    let f = open_fixture();
    assert_eq!(f.tokens.len(), 11);
    for name in f.tokens.keys() {
        let want = if name == "frank-revoked" {
            TokenStatus::Revoked(RevokeReason::Requested)
        } else {
            TokenStatus::Active
        };
        assert_eq!(f.status(name), want, "{name}");
    }
    let i = f.db.introspect(&f.tokens["carol-app-1"]).unwrap();
    assert_eq!(i.sub(), Some("carol"));
    assert_eq!(i.client_id(), Some("app"));
    // Converted: every index entry carried over, nothing else to report.
    let v = f.db.verify(100).unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
    assert_eq!(v.access_tokens, 10);
    assert_eq!(v.families, 1);

    // Revocation by subject and by client still finds every token of format 2's indexes.
    let r = f.db.revoke_subject("alice", None).unwrap();
    assert_eq!((r.families, r.tokens), (0, 3));
    for name in ["alice-web-1", "alice-cli-1", "alice-web-2"] {
        assert_eq!(f.status(name), TokenStatus::Revoked(RevokeReason::Subject));
    }
    let r = f.db.revoke_client("web").unwrap();
    // bob's and dave's standalone tokens, and erin's family with its access token.
    assert_eq!((r.families, r.tokens), (1, 3));
    for name in [
        "bob-web-1",
        "dave-batch-0",
        "erin-family-access",
        "erin-refresh",
    ] {
        assert!(matches!(f.status(name), TokenStatus::Revoked(_)), "{name}");
    }
    for name in ["bob-cli-1", "carol-app-1", "dave-batch-1"] {
        assert_eq!(f.status(name), TokenStatus::Active, "{name}");
    }

    // Tokens issued after the conversion are found with the converted ones.
    let new =
        f.db.issue_access(&Grant::new("carol", "app", "openid").unwrap())
            .unwrap();
    let r = f.db.revoke_subject("carol", Some("app")).unwrap();
    assert_eq!(r.tokens, 2);
    assert_eq!(
        f.db.validate(new.token.expose()).unwrap().status,
        TokenStatus::Revoked(RevokeReason::Subject)
    );
    assert!(f.db.verify(100).unwrap().is_clean());
}

#[test]
fn format_2_file_reopens_and_its_tokens_expire_and_are_swept() {
    let f = open_fixture();
    f.db.close().unwrap();
    drop(f.db);
    assert_eq!(format_version(&f.path), 3, "opening converted the file");
    // Opened again: already format 3, nothing to convert, the same answers.
    let db = TokenDb::open(&f.path, &master(), Fixture::base(&f.clock).build().unwrap()).unwrap();
    assert_eq!(
        db.validate(&f.tokens["bob-cli-1"]).unwrap().status,
        TokenStatus::Active
    );
    f.clock.advance(2 * HOUR);
    assert_eq!(
        db.validate(&f.tokens["bob-cli-1"]).unwrap().status,
        TokenStatus::ExpiredAbsolute
    );
    let pass = db.sweep_now(None).unwrap();
    assert_eq!(pass.tokens, 10, "every access token of the fixture is due");
    let v = db.verify(100).unwrap();
    assert!(v.is_clean(), "{:?}", v.problems);
    assert_eq!(v.access_tokens, 0);
    // The refresh family lives on (90 days); its access token went with the sweep.
    assert_eq!(
        db.validate(&f.tokens["erin-refresh"]).unwrap().status,
        TokenStatus::Active
    );
}
