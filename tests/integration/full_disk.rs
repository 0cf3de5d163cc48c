//! A real full disk (issue 19): the database on a small tmpfs this test mounts, filled up while
//! tokens are issued. Writes fail with `StoreError::Io` of kind `StorageFull`, lookups keep
//! answering, nothing acknowledged is lost, and once space is freed writes work again on the
//! same handle, without a restart. Where mounting is not permitted (not root, no tmpfs, a
//! container without the capability) the test says so and does nothing else.

use crate::common::{Fixture, T0};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokendb::{Error, Grant, ManualClock, StoreError, TokenDb, TokenStatus};

/// A tmpfs mounted for the test's life.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn try_new(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `path` until the file system refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    let _ = f.sync_all();
    n
}

fn grants(from: usize, n: usize) -> Vec<Grant> {
    (from..from + n)
        .map(|i| Grant::new(format!("sub-{i}"), "client", "api").unwrap())
        .collect()
}

fn is_full(e: &Error) -> bool {
    matches!(e, Error::Store(StoreError::Io(io)) if io.kind() == std::io::ErrorKind::StorageFull)
}

#[test]
fn a_full_disk_fails_writes_keeps_lookups_and_recovers_when_space_is_freed() {
    let Some(mount) = Mount::try_new("24m") else {
        println!("full_disk: SKIPPED: mounting a tmpfs is not permitted here (run as root)");
        return;
    };
    let path: PathBuf = mount.path().join("tokens.tdb");
    let clock = Arc::new(ManualClock::new(T0));
    let config = Fixture::base(&clock).cache_size(1 << 20).build().unwrap();
    let master = tokendb::MasterKey::generate();
    let db = TokenDb::create(&path, &master, config).unwrap();

    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0;
    for _ in 0..4 {
        for a in db.issue_access_batch(&grants(next, 500)).unwrap() {
            acknowledged.push(a.token.expose().to_owned());
        }
        next += 500;
    }
    let family = db
        .issue_refresh(&Grant::new("alice", "client", "openid").unwrap())
        .unwrap();

    // Fill what is left, then keep writing until the disk says no.
    let ballast = mount.path().join("ballast");
    let filled = fill(&ballast);
    let mut refused = None;
    for _ in 0..200 {
        match db.issue_access_batch(&grants(next, 500)) {
            Ok(issued) => {
                acknowledged.extend(issued.into_iter().map(|a| a.token.expose().to_owned()));
                next += 500;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("writes never failed on a full disk");
    assert!(
        is_full(&refused),
        "a full disk must fail writes as StorageFull: {refused:?}"
    );
    println!(
        "full_disk: ballast {filled} bytes, {} tokens acknowledged, then: {refused}",
        acknowledged.len()
    );
    // Later writes fail the same way, or fit in pages the file already has; either way the
    // handle stays usable.
    let mut current = family.token.expose().to_owned();
    let mut rotated_while_full = false;
    for i in 0..20 {
        match db.rotate(&current, "client", None) {
            Ok(r) => {
                current = r.token.expose().to_owned();
                rotated_while_full = true;
            }
            Err(e) => assert!(is_full(&e), "{e:?}"),
        }
        match db.issue_access_batch(&grants(next + i * 50, 50)) {
            Ok(issued) => {
                acknowledged.extend(issued.into_iter().map(|a| a.token.expose().to_owned()));
            }
            Err(e) => assert!(is_full(&e), "{e:?}"),
        }
    }
    next += 1_000;
    assert!(db.failure().is_none(), "{:?}", db.failure());
    println!("full_disk: a rotation fitted in free pages while full: {rotated_while_full}");

    // Lookups keep answering, and nothing acknowledged is lost.
    for t in &acknowledged {
        assert_eq!(db.validate(t).unwrap().status, TokenStatus::Active);
    }
    assert_eq!(db.validate(&current).unwrap().status, TokenStatus::Active);

    // Space comes back: writes work again on the same handle.
    std::fs::remove_file(&ballast).unwrap();
    let rotated = db.rotate(&current, "client", None).unwrap();
    for a in db.issue_access_batch(&grants(next, 500)).unwrap() {
        acknowledged.push(a.token.expose().to_owned());
    }
    db.close().unwrap();

    let config = Fixture::base(&clock).build().unwrap();
    let db = TokenDb::open(&path, &master, config).unwrap();
    assert!(db.verify(10).unwrap().is_clean());
    for t in &acknowledged {
        assert_eq!(db.validate(t).unwrap().status, TokenStatus::Active);
    }
    assert_eq!(
        db.validate(rotated.token.expose()).unwrap().status,
        TokenStatus::Active
    );
    for old in [family.token.expose(), current.as_str()] {
        assert_eq!(db.validate(old).unwrap().status, TokenStatus::Rotated);
    }
    db.close().unwrap();
}
