//! I/O faults and power loss (issue 19), on `tokendb_store::fault::FaultyDisk`: an in-memory
//! disk that fails the k-th read, write, sync or length change with `EIO` or `ENOSPC`, or loses
//! power after a number of calls and keeps only what was synced.
//!
//! One mixed workload ([`run`]: issue, batch issue, rotate, reuse, revoke, re-key, expiry and
//! sweep, with lookups between) is driven against a reference of what each token must answer.
//! A write that returned `Ok` fixes its tokens' answers; one that failed leaves them either
//! before or after it (a failed commit's outcome is known only when the failed call was not its
//! sync). Every token is then looked up on the live handle, and again after reopening both the
//! image a reader of the file would see and the image that survives a power loss, after
//! `verify` found them clean.
//!
//! What the handle does after a failed call (`docs/operations.md`): a failed read, write or
//! length change fails that call with `StoreError::Io` of the injected errno, and the handle
//! reopens the file and carries on; a failed sync fails that call the same way and then the
//! handle refuses every call with `Failure::SyncFailed` until reopened.
//!
//! Length changes are also swept on a growing variant of the workload (large batches between its
//! steps), since the plain one grows the file once.
//!
//! `cargo test` runs every k for syncs and length changes, every third k for writes and every
//! seventh for reads, and 200 power-loss rounds; `TOKENDB_FAULT_STRIDE=1` (every k of every
//! kind) and `TOKENDB_POWER_ROUNDS=N` run more (`docs/operations.md` has a long run's figures).

use crate::common::{SplitMix, random_seed};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Error, Failure, Grant, ManualClock, MasterKey, ResealCursor, RotateRefusal, StoreError,
    SweeperConfig, TokenDb, TokenStatus,
};
use tokendb_store::fault::{FaultError, FaultyDisk, IoKind};
use tokendb_store::{Store, StoreOptions};

const T0: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;
const MASTER_A: [u8; 32] = [0xa1; 32];
const MASTER_B: [u8; 32] = [0xb2; 32];

/// What a token may answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum May {
    Active,
    Rotated,
    Revoked,
    /// Past its deadline: expired, or already swept (unknown).
    Expired,
}

impl May {
    fn admits(self, s: TokenStatus) -> bool {
        match self {
            Self::Active => s == TokenStatus::Active,
            Self::Rotated => s == TokenStatus::Rotated,
            Self::Revoked => matches!(s, TokenStatus::Revoked(_)),
            Self::Expired => matches!(
                s,
                TokenStatus::ExpiredAbsolute | TokenStatus::ExpiredIdle | TokenStatus::Unknown
            ),
        }
    }
}

#[derive(Debug)]
struct Family {
    /// Every generation handed out, oldest first.
    tokens: Vec<String>,
    client: String,
    /// A write to it failed: its state is one of two, so nothing more is written to it.
    settled: bool,
}

/// The reference: what every token handed out may answer now.
#[derive(Debug, Default)]
struct Model {
    tokens: BTreeMap<String, Vec<May>>,
    access: Vec<String>,
    families: Vec<Family>,
    /// Master keys the file may be under (two after a failed master-key rotation).
    masters: Vec<[u8; 32]>,
    /// Every error a call returned, in order.
    errors: Vec<String>,
    /// Whether the first error carried the injected errno.
    first_error_errno: Option<i32>,
    /// Calls refused with `Failed(SyncFailed)`.
    refused_after_sync: usize,
    acknowledged: usize,
}

impl Model {
    fn set(&mut self, token: &str, may: &[May]) {
        self.tokens.insert(token.to_owned(), may.to_vec());
    }

    /// Notes a failed call, which must have failed with a storage error.
    fn failed(&mut self, e: &Error) {
        let Error::Store(se) = e else {
            panic!("a failed call returned a non-storage error: {e:?}");
        };
        match se {
            StoreError::Io(io) => {
                if self.errors.is_empty() {
                    self.first_error_errno = io.raw_os_error();
                }
            }
            StoreError::Failed(Failure::SyncFailed(_)) => self.refused_after_sync += 1,
            StoreError::Storage(_)
            | StoreError::BatchAborted(_)
            | StoreError::Failed(Failure::ReopenFailed(_)) => {}
            other => panic!("a failed call returned an unexpected error: {other:?}"),
        }
        self.errors.push(se.to_string());
    }

    /// Rotates the current token of family `f` (if it is settled).
    fn rotate(&mut self, db: &TokenDb, f: usize) {
        let Some(fam) = self.families.get(f).filter(|x| x.settled) else {
            return;
        };
        let current = fam.tokens.last().unwrap().clone();
        let client = fam.client.clone();
        match db.rotate(&current, &client, None) {
            Ok(r) => {
                self.acknowledged += 1;
                self.set(&current, &[May::Rotated]);
                self.set(r.token.expose(), &[May::Active]);
                self.families[f].tokens.push(r.token.expose().to_owned());
            }
            Err(Error::Refused(why)) => panic!("rotation refused: {why:?}"),
            Err(e) => {
                self.failed(&e);
                self.set(&current, &[May::Active, May::Rotated]);
                self.families[f].settled = false;
            }
        }
    }

    /// Presents the first generation of family `f` again: reuse, which revokes the family.
    fn reuse(&mut self, db: &TokenDb, f: usize) {
        let Some(fam) = self
            .families
            .get(f)
            .filter(|x| x.settled && x.tokens.len() > 1)
        else {
            return;
        };
        let first = fam.tokens[0].clone();
        let client = fam.client.clone();
        match db.rotate(&first, &client, None) {
            Err(Error::Refused(RotateRefusal::ReuseDetected { .. })) => {
                self.acknowledged += 1;
                self.revoked(f, &[May::Revoked]);
            }
            Ok(_) | Err(Error::Refused(_)) => panic!("reuse not detected"),
            Err(e) => {
                self.failed(&e);
                self.revoked(f, &[May::Active, May::Revoked]);
            }
        }
    }

    fn revoked(&mut self, f: usize, current: &[May]) {
        let tokens = self.families[f].tokens.clone();
        let (last, older) = tokens.split_last().unwrap();
        for t in older {
            self.set(t, &[May::Rotated, May::Revoked]);
        }
        self.set(last, current);
        self.families[f].settled = false;
    }

    fn revoke_family(&mut self, db: &TokenDb, f: usize) {
        let Some(fam) = self.families.get(f).filter(|x| x.settled) else {
            return;
        };
        let current = fam.tokens.last().unwrap().clone();
        match db.revoke(&current) {
            Ok(_) => {
                self.acknowledged += 1;
                self.revoked(f, &[May::Revoked]);
            }
            Err(e) => {
                self.failed(&e);
                self.revoked(f, &[May::Active, May::Revoked]);
            }
        }
    }

    fn revoke_access(&mut self, db: &TokenDb, i: usize) {
        let Some(t) = self.access.get(i).cloned() else {
            return;
        };
        if self.tokens[&t] != [May::Active] {
            return;
        }
        match db.revoke(&t) {
            Ok(_) => {
                self.acknowledged += 1;
                self.set(&t, &[May::Revoked]);
            }
            Err(e) => {
                self.failed(&e);
                self.set(&t, &[May::Active, May::Revoked]);
            }
        }
    }

    fn issue_refresh(&mut self, db: &TokenDb, i: usize) {
        let g = grant(i);
        match db.issue_refresh(&g) {
            Ok(r) => {
                self.acknowledged += 1;
                self.set(r.token.expose(), &[May::Active]);
                self.families.push(Family {
                    tokens: vec![r.token.expose().to_owned()],
                    client: g.client_id.clone(),
                    settled: true,
                });
            }
            Err(e) => self.failed(&e),
        }
    }

    fn issue_access(&mut self, db: &TokenDb, i: usize) {
        match db.issue_access(&grant(i)) {
            Ok(a) => {
                self.acknowledged += 1;
                self.set(a.token.expose(), &[May::Active]);
                self.access.push(a.token.expose().to_owned());
            }
            Err(e) => self.failed(&e),
        }
    }

    fn issue_batch(&mut self, db: &TokenDb, from: usize, n: usize) {
        let grants: Vec<Grant> = (from..from + n).map(grant).collect();
        match db.issue_access_batch(&grants) {
            Ok(issued) => {
                self.acknowledged += 1;
                for a in issued {
                    self.set(a.token.expose(), &[May::Active]);
                    self.access.push(a.token.expose().to_owned());
                }
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Access tokens are past their deadline: active ones now answer expired, revoked ones
    /// either (or unknown, once swept).
    fn expire_access(&mut self) {
        for t in &self.access {
            let may = self.tokens.get_mut(t).unwrap();
            may.retain(|m| *m != May::Active);
            if !may.contains(&May::Expired) {
                may.push(May::Expired);
            }
        }
    }

    fn rekey(&mut self, db: &TokenDb) {
        let master = MasterKey::from_bytes(MASTER_A);
        if let Err(e) = db.add_sealing_key(&master) {
            self.failed(&e);
            return;
        }
        self.acknowledged += 1;
        let mut cursor = ResealCursor::default();
        loop {
            match db.reseal_batch(4, cursor) {
                Ok(b) if b.more => cursor = b.cursor,
                Ok(_) => break,
                Err(e) => return self.failed(&e),
            }
            self.acknowledged += 1;
        }
        match db.retire_old_sealing_keys(&master) {
            Ok(_) => self.acknowledged += 1,
            Err(e) => return self.failed(&e),
        }
        match db.rotate_master_key(&master, &MasterKey::from_bytes(MASTER_B)) {
            Ok(()) => {
                self.acknowledged += 1;
                self.masters = vec![MASTER_B];
            }
            Err(e) => {
                self.failed(&e);
                self.masters = vec![MASTER_A, MASTER_B];
            }
        }
    }

    /// Looks up every token: each answer must be one the reference allows, or an error (a
    /// lookup may fail on the faulty disk, never answer wrongly).
    fn check(&self, db: &TokenDb, allow_errors: bool, what: &str) {
        for (t, may) in &self.tokens {
            match db.validate(t) {
                Ok(v) => assert!(
                    may.iter().any(|m| m.admits(v.status)),
                    "{what}: token answers {:?}, expected one of {may:?}",
                    v.status
                ),
                Err(e) => assert!(allow_errors, "{what}: lookup failed: {e}"),
            }
        }
    }

    /// A few lookups in the middle of the workload (they read the disk too).
    fn peek(&mut self, db: &TokenDb, n: usize) {
        let sample: Vec<(String, Vec<May>)> = self
            .tokens
            .iter()
            .take(n)
            .map(|(t, m)| (t.clone(), m.clone()))
            .collect();
        for (t, may) in sample {
            match db.validate(&t) {
                Ok(v) => assert!(
                    may.iter().any(|m| m.admits(v.status)),
                    "lookup during the workload answers {:?}, expected one of {may:?}",
                    v.status
                ),
                Err(e) => self.failed(&e),
            }
        }
    }
}

fn grant(i: usize) -> Grant {
    Grant::new(
        format!("sub-{i}"),
        format!("client-{}", i % 3),
        "openid api",
    )
    .unwrap()
}

fn config(clock: &Arc<ManualClock>) -> Config {
    Config::builder()
        .clock(clock.clone())
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .access_lifetime(Duration::from_secs(3600))
        .refresh_lifetime(
            Duration::from_secs(30 * 24 * 3600),
            Duration::from_secs(7 * 24 * 3600),
        )
        // A small page cache, so that lookups and writes read the disk.
        .cache_size(64 << 10)
        .build()
        .unwrap()
}

/// The options of the stores the tests open (the page cache kept small, so that the
/// workload reads the disk).
fn store_options() -> StoreOptions {
    StoreOptions {
        cache_size: Some(64 << 10),
        ..StoreOptions::default()
    }
}

/// A fresh database on `disk`, and its clock.
fn fresh(disk: &FaultyDisk) -> (TokenDb, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let config = config(&clock);
    let store = Store::create_on(disk, &MasterKey::from_bytes(MASTER_A), store_options())
        .expect("creating the database (no fault is armed yet)");
    (TokenDb::from_store_for_tests(store, config).unwrap(), clock)
}

/// How much the workload writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Size {
    /// A few tokens: the file grows once.
    Small,
    /// The same, with large batches between its steps, and a sweep that frees most of the
    /// file: it grows several times and shrinks, so that length changes are many.
    Growing,
}

/// The mixed workload on a fresh database on `disk`, with `arm` called once the database is
/// created. Returns the reference and the handle.
fn run(disk: &FaultyDisk, size: Size, arm: impl FnOnce()) -> (Model, TokenDb) {
    let (db, clock) = fresh(disk);
    arm();
    let mut m = Model {
        masters: vec![MASTER_A],
        ..Model::default()
    };
    m.workload(&db, &clock, size);
    (m, db)
}

impl Model {
    fn workload(&mut self, db: &TokenDb, clock: &ManualClock, size: Size) {
        let grow = |m: &mut Self, from: usize| {
            if size == Size::Growing {
                m.issue_batch(db, from, 800);
            }
        };
        for i in 0..6 {
            self.issue_refresh(db, i);
        }
        self.issue_access(db, 0);
        self.issue_access(db, 1);
        self.issue_batch(db, 10, 6);
        grow(self, 10_000);
        self.peek(db, 6);
        clock.advance(1_000);
        for f in 0..5 {
            self.rotate(db, f);
        }
        self.rotate(db, 0);
        grow(self, 20_000);
        self.reuse(db, 0);
        self.revoke_family(db, 1);
        self.revoke_access(db, 0);
        self.peek(db, 40);
        grow(self, 30_000);
        self.rekey(db);
        clock.advance(2 * HOUR);
        self.expire_access();
        if let Err(e) = db.sweep_now(None) {
            self.failed(&e);
        } else {
            self.acknowledged += 1;
        }
        for i in 6..8 {
            self.issue_refresh(db, i);
        }
        for f in [2, 3, 4, 6, 7] {
            self.rotate(db, f);
        }
        self.issue_batch(db, 20, 3);
        grow(self, 40_000);
        self.revoke_family(db, 3);
        self.issue_access(db, 2);
    }
}

/// Opens `image` on a fresh disk under whichever master key opens it, `verify`s it and looks
/// every token up.
fn reopen_and_check(m: &Model, image: Vec<u8>, what: &str) {
    let clock = Arc::new(ManualClock::new(T0 + 3 * HOUR));
    let mut last = None;
    for master in &m.masters {
        let disk = FaultyDisk::from_image(image.clone());
        let config = config(&clock);
        match Store::open_on(&disk, &MasterKey::from_bytes(*master), store_options()) {
            Ok(store) => {
                let db = TokenDb::from_store_for_tests(store, config).unwrap();
                let report = db.verify(20).unwrap();
                assert!(report.is_clean(), "{what}: verify: {:?}", report.problems);
                m.check(&db, false, what);
                db.close().unwrap();
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("{what}: reopening failed: {last:?}");
}

/// One round with a fault armed: the workload, then every check.
/// Returns whether the fault fired, and whether a call failed on it.
fn faulted_round(kind: IoKind, size: Size, k: u64, error: FaultError) -> (bool, bool) {
    let disk = FaultyDisk::new();
    let (m, db) = run(&disk, size, || disk.fail_nth(kind, k, error));
    // Faults are tested inside the workload; the checks below run on a healthy disk.
    disk.heal();
    let fired = disk.faults_fired() > 0;
    let what = format!("{kind:?} #{k} {error:?}");
    if !fired || m.errors.is_empty() {
        // A fault that fired without failing a call hit a write redb makes only to free its
        // write buffer early: the page stays buffered and is written again with its commit.
        assert!(
            m.errors.is_empty(),
            "{what}: errors without a fault: {:?}",
            m.errors
        );
        assert!(db.failure().is_none(), "{what}: {:?}", db.failure());
    } else {
        let errno = match error {
            FaultError::Eio => 5,
            _ => 28,
        };
        assert_eq!(
            m.first_error_errno,
            Some(errno),
            "{what}: the first failed call must carry the injected error: {:?}",
            m.errors
        );
        if kind == IoKind::Sync {
            // The handle refuses everything after a failed sync.
            assert!(
                matches!(db.failure(), Some(Failure::SyncFailed(_))),
                "{what}: after a failed sync the handle must refuse work, it is {:?}",
                db.failure()
            );
            assert!(matches!(
                db.issue_refresh(&grant(99)),
                Err(Error::Store(StoreError::Failed(Failure::SyncFailed(_))))
            ));
            assert!(
                m.errors.len() == 1 + m.refused_after_sync,
                "{what}: {:?}",
                m.errors
            );
        } else {
            // One failed call, then the handle carried on.
            assert_eq!(m.errors.len(), 1, "{what}: {:?}", m.errors);
            assert!(db.failure().is_none(), "{what}: {:?}", db.failure());
            db.issue_refresh(&grant(99))
                .unwrap_or_else(|e| panic!("{what}: no write after recovery: {e}"));
        }
    }
    m.check(
        &db,
        kind == IoKind::Sync && fired,
        &format!("{what}, live handle"),
    );
    let _ = db.close();
    drop(db);
    reopen_and_check(&m, disk.current_image(), &format!("{what}, reopened"));
    reopen_and_check(
        &m,
        disk.durable_image(),
        &format!("{what}, after a power loss"),
    );
    (fired, !m.errors.is_empty())
}

fn stride(default: u64) -> u64 {
    std::env::var("TOKENDB_FAULT_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// Fails the k-th call of `kind`, for every k the workload reaches (every `stride`-th k).
fn sweep_kind(kind: IoKind, size: Size, step: u64) {
    let disk = FaultyDisk::new();
    let mut before = None;
    let (_, db) = run(&disk, size, || before = Some(disk.counts()));
    // Calls made by the workload itself, after creation and before closing.
    let reach = disk.counts().of(kind) - before.unwrap().of(kind);
    db.close().unwrap();
    let (mut rounds, mut fired, mut failed, mut within) = (0u64, 0u64, 0u64, 0u64);
    for error in [FaultError::Eio, FaultError::Enospc] {
        // Two past the end too: those faults never fire, and nothing may fail.
        let mut k = 1;
        while k <= reach + 2 {
            let (f, c) = faulted_round(kind, size, k, error);
            rounds += 1;
            fired += u64::from(f);
            failed += u64::from(c);
            if k <= reach {
                within += 1;
            }
            k += step;
        }
    }
    println!(
        "faults {kind:?} ({size:?} workload): {rounds} rounds (k = 1..={} step {step}, EIO and ENOSPC), {fired} fired, {failed} failed a call",
        reach + 2
    );
    // The workload's calls vary a little between runs (random tokens, so other B-tree splits).
    assert!(
        fired * 10 >= within * 9,
        "the faults must land inside the workload: {fired} of {within} fired"
    );
}

#[test]
fn every_write_fault_is_a_typed_error_and_loses_nothing() {
    sweep_kind(IoKind::Write, Size::Small, stride(3));
}

#[test]
fn every_sync_fault_refuses_further_work_and_loses_nothing() {
    sweep_kind(IoKind::Sync, Size::Small, stride(1));
}

#[test]
fn length_change_faults_recover() {
    sweep_kind(IoKind::SetLen, Size::Small, stride(1));
    sweep_kind(IoKind::SetLen, Size::Growing, stride(1));
}

#[test]
fn read_faults_recover() {
    sweep_kind(IoKind::Read, Size::Small, stride(7));
}

/// Power loss at a random call: the disk keeps only what was synced (or, in every other round,
/// also some of the unsynced writes, in order, as a disk writing back on its own would).
/// Reopening finds every acknowledged write.
#[test]
fn power_loss_at_any_point_keeps_every_acknowledged_write() {
    let rounds: u64 = std::env::var("TOKENDB_POWER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed = random_seed();
    println!("power loss: seed {seed} (TOKENDB_TEST_SEED={seed} replays it)");
    let mut rng = SplitMix(seed);
    let disk = FaultyDisk::new();
    let mut before = None;
    let (_, db) = run(&disk, Size::Small, || before = Some(disk.counts()));
    db.close().unwrap();
    let total = disk.counts().total() - before.unwrap().total();
    let (mut cut, mut torn_rounds, mut acknowledged) = (0u64, 0u64, 0usize);
    for round in 0..rounds {
        let disk = FaultyDisk::new();
        let at = rng.next_u64() % total;
        let (m, db) = run(&disk, Size::Small, || disk.cut_power_after(at));
        cut += u64::from(disk.power_lost());
        acknowledged += m.acknowledged;
        // Rounds alternate: only what was synced; whole unsynced writes kept at random; and
        // unsynced writes kept 512-byte sector by sector, tearing pages.
        let torn = round % 3;
        let mut r = SplitMix(rng.next_u64());
        let image = match torn {
            0 => disk.durable_image(),
            1 => disk.torn_image(|| r.next_u64().is_multiple_of(2)),
            _ => disk.torn_sectors_image(512, || r.next_u64().is_multiple_of(2)),
        };
        torn_rounds += u64::from(torn != 0);
        let _ = db.close();
        drop(db);
        reopen_and_check(
            &m,
            image,
            &format!("power loss after {at} calls (round {round}, tearing {torn}, seed {seed})"),
        );
    }
    println!(
        "power loss: {rounds} rounds, power cut in {cut} ({torn_rounds} with torn unsynced writes, a third of the rounds torn by 512-byte sectors), {acknowledged} acknowledged writes checked after reopening"
    );
    assert!(
        cut * 10 >= rounds * 9,
        "the cut must land inside the workload"
    );
}
