//! The sweeper (issue 4, design §6), driven by a manual clock through `TokenDb::sweep_now`, and
//! its background thread: deadlines are exclusive, idle and absolute expiry, nothing left behind
//! by a long-rotated family, revoked families kept until their deadline, grace slots erased,
//! prompt shutdown mid-pass, the failed state, and the metrics. On both backends; what depends
//! on the file's layout is in `sweeper_file.rs`.

use crate::common::{Contents, DAY, Fixture, HOUR, MINUTE, T0, grant};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokendb::{
    Clock, Error, Failure, ManualClock, RevokeReason, RotateRefusal, StoreError, SweeperConfig,
    TokenDb, TokenStatus,
};
#[allow(unused_imports)]
use tokendb_backend::Backend as _;
use tokendb_store::{Entry, IndexEntry};

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn status(db: &TokenDb, token: &str) -> TokenStatus {
    db.validate(token).unwrap().status
}

/// `(families, tokens)` deleted by one manual pass.
fn sweep(db: &TokenDb) -> (u64, u64) {
    let r = db.sweep_now(None).unwrap();
    (r.families, r.tokens)
}

#[test]
fn a_deadline_equal_to_now_is_expired_and_swept() {
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(ms(2 * HOUR), ms(HOUR))
            .access_lifetime(ms(10 * MINUTE))
    });
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(1)).unwrap();
    let bound = db.issue_access_for_family(fam.family, None).unwrap();
    let alone = db.issue_access(&grant(2)).unwrap();
    assert_eq!(alone.expires.at_ms, T0 + 10 * MINUTE);
    Contents::of(db, &fx.place).assert_exact();

    fx.advance(10 * MINUTE - 1);
    assert_eq!(sweep(db), (0, 0), "one millisecond early: nothing is due");
    assert!(db.validate(alone.token.expose()).unwrap().is_active());
    assert!(db.validate(bound.token.expose()).unwrap().is_active());

    fx.advance(1); // now == deadline: already expired, refused before any sweep
    assert_eq!(
        status(db, alone.token.expose()),
        TokenStatus::ExpiredAbsolute
    );
    assert_eq!(
        status(db, bound.token.expose()),
        TokenStatus::ExpiredAbsolute
    );
    assert_eq!(sweep(db), (0, 2));
    assert_eq!(status(db, alone.token.expose()), TokenStatus::Unknown);
    assert_eq!(status(db, bound.token.expose()), TokenStatus::Unknown);
    Contents::of(db, &fx.place).assert_exact();

    fx.advance(HOUR - 10 * MINUTE - 1);
    assert_eq!(sweep(db), (0, 0));
    assert!(db.validate(fam.token.expose()).unwrap().is_active());
    fx.advance(1); // the idle deadline
    assert_eq!(status(db, fam.token.expose()), TokenStatus::ExpiredIdle);
    assert_eq!(sweep(db), (1, 0));
    assert_eq!(status(db, fam.token.expose()), TokenStatus::Unknown);
    assert!(Contents::of(db, &fx.place).is_empty());
}

#[test]
fn idle_expiry_sweeps_a_family_whose_absolute_deadline_is_far() {
    let fx = Fixture::with(|b| b.refresh_lifetime(ms(30 * DAY), ms(DAY)));
    let db = &fx.db;
    let idle = db.issue_refresh(&grant(1)).unwrap();
    let used = db.issue_refresh(&grant(2)).unwrap();
    fx.advance(12 * HOUR);
    let next = db.rotate(used.token.expose(), "client-2", None).unwrap();
    assert_eq!(next.idle.at_ms, T0 + 36 * HOUR);
    assert_eq!(next.absolute.at_ms, T0 + 30 * DAY);
    let c = Contents::of(db, &fx.place);
    c.assert_exact(); // the rotation moved the family's deadline entry to T0 + 36 h
    assert!(c.index.contains(&IndexEntry::Deadline(
        T0 + 36 * HOUR,
        Entry::Family(used.family)
    )));

    fx.advance(12 * HOUR);
    assert_eq!(sweep(db), (1, 0), "idle for a day: swept, 29 days early");
    assert_eq!(status(db, idle.token.expose()), TokenStatus::Unknown);
    assert!(db.validate(next.token.expose()).unwrap().is_active());
    assert_eq!(status(db, used.token.expose()), TokenStatus::Rotated);

    fx.advance(12 * HOUR - 1);
    assert_eq!(sweep(db), (0, 0));
    fx.advance(1);
    assert_eq!(sweep(db), (1, 0));
    assert_eq!(status(db, next.token.expose()), TokenStatus::Unknown);
    assert!(Contents::of(db, &fx.place).is_empty());
    let m = db.sweeper_metrics();
    assert_eq!((m.families_deleted, m.tokens_deleted, m.refiled), (2, 0, 0));
}

#[test]
fn a_family_with_many_rotations_leaves_nothing_behind() {
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(ms(2 * DAY), ms(DAY))
            .access_lifetime(ms(HOUR))
            .grace_period(ms(30_000))
    });
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(4)).unwrap();
    let mut tokens = vec![fam.token];
    let mut access = Vec::new();
    for i in 0..60 {
        fx.advance(MINUTE);
        let next = db
            .rotate(tokens.last().unwrap().expose(), "client-1", None)
            .unwrap();
        tokens.push(next.token);
        if i % 10 == 0 {
            access.push(db.issue_access_for_family(fam.family, None).unwrap().token);
            sweep(db); // grace timers fire along the way
        }
    }
    let c = Contents::of(db, &fx.place);
    c.assert_exact();
    assert_eq!(
        c.families.len(),
        1,
        "one record per family, not per rotation"
    );
    assert_eq!(c.families[&fam.family].generation, 61);

    fx.advance(DAY); // past the idle deadline of the last rotation
    let r = db.sweep_now(None).unwrap();
    assert_eq!((r.families, r.tokens), (1, 6));
    assert!(
        Contents::of(db, &fx.place).is_empty(),
        "no record, no index entry, no grace timer"
    );
    for t in tokens.iter().chain(&access) {
        assert_eq!(status(db, t.expose()), TokenStatus::Unknown);
    }
}

/// A rotation in the last seconds of the absolute lifetime sets a grace timer that ends after
/// the family: the family goes at its deadline, the timer (which points at nothing any more)
/// when it fires, at most the grace period later.
#[test]
fn a_grace_timer_past_the_family_deadline_is_cleared_when_it_fires() {
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(ms(HOUR), ms(HOUR))
            .grace_period(ms(30_000))
    });
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(1)).unwrap();
    fx.advance(HOUR - 10_000);
    let next = db.rotate(fam.token.expose(), "client-1", None).unwrap();
    assert_eq!(
        next.idle.at_ms,
        T0 + HOUR,
        "capped by the absolute deadline"
    );
    fx.advance(10_000);
    assert_eq!(sweep(db), (1, 0));
    let c = Contents::of(db, &fx.place);
    assert!(c.families.is_empty() && c.tokens.is_empty());
    for (d, f, _) in c.grace_timers() {
        assert_eq!(f, fam.family);
        assert!(d <= T0 + HOUR + tokendb_rotation::MAX_GRACE_MS);
    }
    assert_eq!(
        c.grace_timers().len(),
        c.index.len(),
        "only grace timers remain"
    );
    fx.advance(20_000);
    sweep(db);
    assert!(Contents::of(db, &fx.place).is_empty());
}

#[test]
fn a_revoked_family_answers_revoked_until_its_deadline_then_is_swept() {
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(ms(DAY), ms(HOUR))
            .access_lifetime(ms(2 * HOUR))
    });
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(1)).unwrap();
    let a1 = db.issue_access_for_family(fam.family, None).unwrap();
    let a2 = db.issue_access_for_family(fam.family, None).unwrap();
    fx.advance(10 * MINUTE);
    let r = db.revoke(fam.token.expose()).unwrap();
    assert_eq!((r.families, r.tokens), (1, 2));

    fx.advance(50 * MINUTE - 1);
    assert_eq!(sweep(db), (0, 0), "revoked, but not yet at its deadline");
    let revoked = TokenStatus::Revoked(RevokeReason::Requested);
    assert_eq!(status(db, fam.token.expose()), revoked);
    assert_eq!(
        status(db, a1.token.expose()),
        TokenStatus::Revoked(RevokeReason::Family)
    );
    assert!(!db.introspect(a2.token.expose()).unwrap().is_active());
    assert!(matches!(
        db.rotate(fam.token.expose(), "client-1", None),
        Err(Error::Refused(RotateRefusal::Revoked(
            RevokeReason::Requested
        )))
    ));
    Contents::of(db, &fx.place).assert_exact();

    fx.advance(1);
    assert_eq!(
        sweep(db),
        (1, 2),
        "the family goes at its deadline, with its tokens"
    );
    for t in [&fam.token, &a1.token, &a2.token] {
        assert_eq!(status(db, t.expose()), TokenStatus::Unknown);
    }
    assert!(Contents::of(db, &fx.place).is_empty());
}

#[test]
fn access_tokens_of_a_swept_family_go_with_it() {
    let fx = Fixture::with(|b| {
        b.refresh_lifetime(ms(30 * DAY), ms(HOUR))
            .access_lifetime(ms(3 * HOUR))
    });
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(1)).unwrap();
    let bound: Vec<_> = (0..3)
        .map(|_| db.issue_access_for_family(fam.family, None).unwrap())
        .collect();
    // A bound token never outlives its family (its deadline is capped at the family's), so
    // its own deadline entry comes due with the family's at the latest.
    assert!(bound.iter().all(|a| a.expires.at_ms <= T0 + HOUR));
    let other = db.issue_refresh(&grant(2)).unwrap();
    fx.advance(30 * MINUTE);
    db.rotate(other.token.expose(), "client-2", None).unwrap();
    let alone = db.issue_access(&grant(1)).unwrap();

    fx.advance(30 * MINUTE); // fam's idle deadline
    // One entry examined: the family's (it sorts before its tokens' entries at the same
    // deadline). Its three tokens go with it, entries and all.
    let r = db.sweep_now(Some(1)).unwrap();
    assert_eq!((r.families, r.tokens), (1, 3), "{r:?}");
    for a in &bound {
        assert_eq!(status(db, a.token.expose()), TokenStatus::Unknown);
    }
    assert!(db.validate(alone.token.expose()).unwrap().is_active());
    let c = Contents::of(db, &fx.place);
    c.assert_exact();
    assert_eq!((c.families.len(), c.tokens.len()), (1, 1));
    assert!(
        !c.index
            .iter()
            .any(|e| matches!(e, IndexEntry::FamilyToken(f, _) if *f == fam.family))
    );
}

#[test]
fn grace_slots_are_erased_by_the_sweeper_at_the_end_of_the_window() {
    let fx = Fixture::with(|b| b.grace_period(ms(30_000)));
    let db = &fx.db;
    let fam = db.issue_refresh(&grant(1)).unwrap();
    fx.advance(1_000);
    let next = db.rotate(fam.token.expose(), "client-1", None).unwrap();
    let rec = || Contents::of(db, &fx.place).families[&fam.family].clone();
    assert!(
        !rec().grace.is_empty(),
        "the successor is kept for the window"
    );
    Contents::of(db, &fx.place).assert_exact();

    fx.advance(29_999);
    let r = db.sweep_now(None).unwrap();
    assert_eq!(r.grace_erased, 0);
    let replay = db.rotate(fam.token.expose(), "client-1", None).unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.token, next.token);

    fx.advance(1); // the window's end
    let r = db.sweep_now(None).unwrap();
    assert_eq!((r.grace_erased, r.families, r.tokens), (1, 0, 0));
    assert!(rec().grace.is_empty(), "erased by the sweeper");
    assert_eq!(rec().generation, 2);
    assert!(db.validate(next.token.expose()).unwrap().is_active());
    assert_eq!(status(db, fam.token.expose()), TokenStatus::Rotated);
    assert!(Contents::of(db, &fx.place).grace_timers().is_empty());
    Contents::of(db, &fx.place).assert_exact();
}

/// A clock that notes which OS thread the sweeper runs on, and can be told to panic there.
#[derive(Debug)]
struct SpyClock {
    inner: Arc<ManualClock>,
    panic_in_sweeper: AtomicBool,
    sweeper_task: Mutex<Option<PathBuf>>,
}

impl SpyClock {
    fn new(inner: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            panic_in_sweeper: AtomicBool::new(false),
            sweeper_task: Mutex::new(None),
        })
    }
}

impl Clock for SpyClock {
    fn now_ms(&self) -> u64 {
        if std::thread::current().name() == Some("tokendb-sweeper") {
            if let Ok(task) = std::fs::read_link("/proc/thread-self") {
                *self.sweeper_task.lock().unwrap() = Some(PathBuf::from("/proc").join(task));
            }
            if self.panic_in_sweeper.load(Ordering::SeqCst) {
                panic!("injected fault: the clock failed on the sweeper thread");
            }
        }
        self.inner.now_ms()
    }
}

fn background(interval: Duration, batch_size: usize) -> SweeperConfig {
    SweeperConfig::DEFAULT
        .with_enabled(true)
        .with_interval(interval)
        .with_batch_size(batch_size)
        .with_pass_budget(Duration::from_secs(600))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn shutdown_in_the_middle_of_a_pass_returns_within_one_batch() {
    const TOKENS: usize = 1_000;
    let manual = Arc::new(ManualClock::new(T0));
    let spy = SpyClock::new(Arc::clone(&manual));
    let fx = Fixture::with(|b| {
        b.clock(spy.clone())
            .access_lifetime(ms(MINUTE))
            .sweeper(background(Duration::from_millis(5), 1))
    });
    let db = &fx.db;
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in (t..TOKENS).step_by(8) {
                    db.issue_access(&grant(i)).unwrap();
                }
            });
        }
    });
    println!(
        "sweeper/shutdown: issued {TOKENS} tokens in {:?}",
        started.elapsed()
    );
    wait_for("the sweeper to tick", || {
        spy.sweeper_task.lock().unwrap().is_some()
    });
    let task = spy.sweeper_task.lock().unwrap().clone().unwrap();
    assert!(task.exists(), "{task:?}");

    let before = db.commits();
    manual.advance(2 * MINUTE); // the whole backlog is due; batches of one entry
    wait_for("the pass to get going", || db.commits() >= before + 20);
    let t = Instant::now();
    db.close().unwrap();
    let took = t.elapsed();
    let batches = db.commits() - before;
    println!("sweeper/shutdown: close() mid-pass took {took:?}, after {batches} batches");
    assert!(
        !task.exists(),
        "the sweeper thread {task:?} is still alive after close()"
    );
    assert!(matches!(
        db.sweep_now(None),
        Err(Error::Store(StoreError::Closed))
    ));

    let config = Fixture::base(&manual).build().unwrap();
    let db = fx.reopen(config).unwrap();
    let c = Contents::of(&db, &fx.place);
    println!(
        "sweeper/shutdown: {} of {TOKENS} tokens left unswept",
        c.tokens.len()
    );
    assert!(
        !c.tokens.is_empty() && c.tokens.len() < TOKENS,
        "close() came mid-pass"
    );
    c.assert_exact();
}

#[test]
fn a_panic_in_the_sweeper_marks_the_database_failed() {
    let manual = Arc::new(ManualClock::new(T0));
    let spy = SpyClock::new(Arc::clone(&manual));
    let fx = Fixture::with(|b| {
        b.clock(spy.clone())
            .sweeper(background(Duration::from_millis(5), 100))
    });
    let db = fx.db.clone();
    let fam = db.issue_refresh(&grant(1)).unwrap();
    spy.panic_in_sweeper.store(true, Ordering::SeqCst);
    wait_for("the failed state", || db.failure().is_some());

    let why = db.failure().unwrap();
    assert!(
        matches!(&why, Failure::SweeperPanicked(what) if what.contains("injected fault")),
        "{why:?}"
    );
    assert!(why.to_string().contains("sweeper thread panicked"), "{why}");
    let check = |r: Result<(), Error>| match r {
        Err(Error::Store(StoreError::Failed(msg))) => {
            assert!(matches!(msg, Failure::SweeperPanicked(_)), "{msg}");
            let shown = Error::Store(StoreError::Failed(msg)).to_string();
            assert!(
                shown.contains("failed state") && shown.contains("reopen"),
                "{shown}"
            );
        }
        other => panic!("expected the failed state, got {other:?}"),
    };
    check(db.issue_refresh(&grant(2)).map(drop));
    check(db.validate(fam.token.expose()).map(drop));
    check(db.introspect(fam.token.expose()).map(drop));
    check(db.rotate(fam.token.expose(), "client-1", None).map(drop));
    check(db.revoke(fam.token.expose()).map(drop));
    check(db.sweep_now(None).map(drop));
    check(fx.db.issue_access(&grant(3)).map(drop));

    db.close().unwrap();
    spy.panic_in_sweeper.store(false, Ordering::SeqCst);
    let db = fx.reopen(Fixture::base(&manual).build().unwrap()).unwrap();
    assert!(
        db.validate(fam.token.expose()).unwrap().is_active(),
        "reopened, nothing lost"
    );
}

#[test]
fn metrics_count_what_the_passes_did() {
    // Manual passes (no thread), then the same through the background thread's command channel.
    for thread in [false, true] {
        let fx = Fixture::with(|b| {
            let b = b
                .refresh_lifetime(ms(DAY), ms(HOUR))
                .access_lifetime(ms(2 * HOUR));
            if thread {
                b.sweeper(background(Duration::from_secs(3600), 2))
            } else {
                b
            }
        });
        let db = &fx.db;
        for i in 0..2 {
            let f = db.issue_refresh(&grant(i)).unwrap();
            db.issue_access_for_family(f.family, None).unwrap();
        }
        db.issue_access(&grant(5)).unwrap();
        assert_eq!(db.sweeper_metrics(), Default::default());

        let commits = db.commits();
        let r = db.sweep_now(None).unwrap();
        assert_eq!(r.batches, 0, "nothing due: no write transaction");
        assert_eq!(db.commits(), commits);
        let m = db.sweeper_metrics();
        assert_eq!(
            (m.passes, m.families_deleted, m.tokens_deleted, m.lag_ms),
            (1, 0, 0, 0)
        );

        fx.advance(HOUR + 5 * MINUTE);
        let r = db.sweep_now(None).unwrap();
        assert_eq!((r.families, r.tokens), (2, 2));
        let m = db.sweeper_metrics();
        assert_eq!(
            (m.passes, m.families_deleted, m.tokens_deleted, m.refiled),
            (2, 2, 2, 0)
        );
        assert_eq!(m.lag_ms, 5 * MINUTE, "age of the oldest overdue entry");
        assert!(m.last_pass_us > 0);
        assert_eq!(
            m.last_pass_us,
            u64::try_from(r.duration.as_micros()).unwrap()
        );

        fx.advance(HOUR + 10 * MINUTE);
        let r = db.sweep_now(Some(10)).unwrap();
        assert_eq!((r.families, r.tokens), (0, 1));
        let m = db.sweeper_metrics();
        assert_eq!((m.passes, m.families_deleted, m.tokens_deleted), (3, 2, 3));
        assert_eq!(m.lag_ms, 15 * MINUTE);
        assert!(Contents::of(db, &fx.place).is_empty(), "thread: {thread}");
    }
}

#[test]
fn a_pass_cut_short_by_its_budget_is_followed_at_once_not_at_the_next_tick() {
    const TOKENS: u64 = 200;
    const INTERVAL: Duration = Duration::from_secs(3);
    // Every pass stops after its first batch of 10: the backlog takes 20 passes. At one pass
    // per tick that would be a minute; catching up, it is done before the second tick.
    let fx = Fixture::with(|b| {
        b.access_lifetime(ms(MINUTE)).sweeper(
            SweeperConfig::DEFAULT
                .with_enabled(true)
                .with_interval(INTERVAL)
                .with_batch_size(10)
                .with_pass_budget(Duration::ZERO),
        )
    });
    let db = &fx.db;
    for i in 0..TOKENS {
        db.issue_access(&grant(usize::try_from(i).unwrap()))
            .unwrap();
    }
    fx.advance(2 * MINUTE);
    wait_for("the first pass", || db.sweeper_metrics().tokens_deleted > 0);
    let first = Instant::now();
    wait_for("the backlog to be swept", || {
        db.sweeper_metrics().tokens_deleted == TOKENS
    });
    let took = first.elapsed();
    let m = db.sweeper_metrics();
    println!(
        "sweeper/catch-up: {TOKENS} tokens in {} passes, {took:?} after the first",
        m.passes
    );
    assert!(m.passes >= TOKENS / 10, "{m:?}");
    assert!(
        took < INTERVAL,
        "the sweeper waited for a tick with entries still due ({took:?})"
    );
    // The tokens' index entries go in the passes after the last token.
    wait_for("the index entries to be swept", || {
        Contents::of(db, &fx.place).is_empty()
    });
}
