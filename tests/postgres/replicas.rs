//! Several replicas (handles) on one PostgreSQL schema: what a deployment behind a load
//! balancer relies on.

use crate::common::{DAY, HOUR, T0, grant};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tokendb::{
    Clock, Config, Error, ManualClock, MasterKey, ResealCursor, RotateRefusal, StoreError,
    SweeperConfig, TokenDb, TokenStatus,
};
use tokendb_tests::place::{Place, fresh_schema, postgres_addr, postgres_url};
use tokendb_tests::proxy::{Break, CommitBreaker};

/// A schema, its master key and a manual clock shared by the replicas of one test.
struct Cluster {
    schema: String,
    master: MasterKey,
    clock: Arc<ManualClock>,
}

impl Cluster {
    fn new() -> Self {
        Self {
            schema: fresh_schema(),
            master: MasterKey::generate(),
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    fn config(&self, grace: Option<Duration>) -> Config {
        let mut b = Config::builder()
            .clock(self.clock.clone())
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false));
        if let Some(g) = grace {
            b = b.grace_period(g);
        }
        b.build().unwrap()
    }

    fn replica(&self, grace: Option<Duration>) -> TokenDb {
        self.replica_at(postgres_url(), grace)
    }

    fn replica_at(&self, url: &str, grace: Option<Duration>) -> TokenDb {
        TokenDb::open_postgres_with(
            url,
            &self.master,
            self.config(grace),
            Place::pg_options(&self.schema),
        )
        .unwrap()
    }

    /// A raw SQL session on the schema: what a database administrator has.
    fn sql(&self) -> postgres::Client {
        let mut c = postgres::Client::connect(postgres_url(), postgres::NoTls).unwrap();
        c.batch_execute(&format!("SET search_path = {}", self.schema))
            .unwrap();
        c
    }
}

#[test]
fn a_revocation_on_one_replica_is_seen_by_the_next_lookup_of_another() {
    let c = Cluster::new();
    let (a, b) = (c.replica(None), c.replica(None));
    let rt = a.issue_refresh(&grant(1)).unwrap();
    let at = a.issue_access(&grant(2)).unwrap();
    assert!(b.validate(rt.token.expose()).unwrap().is_active());
    assert!(b.validate(at.token.expose()).unwrap().is_active());
    a.revoke(rt.token.expose()).unwrap();
    a.revoke(at.token.expose()).unwrap();
    for t in [&rt.token, &at.token] {
        assert!(matches!(
            b.validate(t.expose()).unwrap().status,
            TokenStatus::Revoked(_)
        ));
    }
    // And a rotation on B of the revoked family is refused.
    assert!(matches!(
        b.rotate(rt.token.expose(), &grant(1).client_id, None),
        Err(Error::Refused(RotateRefusal::Revoked(_)))
    ));
}

#[test]
fn one_token_presented_on_two_replicas_by_32_threads_gets_one_successor() {
    let c = Cluster::new();
    let grace = Some(Duration::from_secs(30));
    let replicas = [c.replica(grace), c.replica(grace)];
    for round in 0..10 {
        let issued = replicas[0].issue_refresh(&grant(round)).unwrap();
        let token = Arc::new(issued.token.expose().to_owned());
        let barrier = Arc::new(Barrier::new(32));
        let answers: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..32)
                .map(|i| {
                    let (db, token, barrier) =
                        (&replicas[i % 2], Arc::clone(&token), Arc::clone(&barrier));
                    s.spawn(move || {
                        barrier.wait();
                        db.rotate(&token, &grant(round).client_id, None)
                            .map(|r| (r.token.expose().to_owned(), r.generation, r.replayed))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let successors: std::collections::BTreeSet<_> = answers
            .iter()
            .map(|a| a.as_ref().unwrap().0.clone())
            .collect();
        assert_eq!(successors.len(), 1, "round {round}: {answers:?}");
        assert_eq!(
            answers.iter().filter(|a| !a.as_ref().unwrap().2).count(),
            1,
            "round {round}: exactly one rotation, the rest grace replays"
        );
        let next = successors.into_iter().next().unwrap();
        for db in &replicas {
            let v = db.validate(&next).unwrap();
            assert!(v.is_active());
            assert_eq!(
                db.validate(&token).unwrap().status,
                TokenStatus::Rotated,
                "round {round}"
            );
        }
    }
}

#[test]
fn reuse_detected_on_one_replica_revokes_the_family_for_all() {
    let c = Cluster::new();
    let (a, b) = (c.replica(None), c.replica(None));
    let issued = a.issue_refresh(&grant(3)).unwrap();
    let next = a
        .rotate(issued.token.expose(), &grant(3).client_id, None)
        .unwrap();
    // The thief presents the old token to the other replica.
    assert!(matches!(
        b.rotate(issued.token.expose(), &grant(3).client_id, None),
        Err(Error::Refused(RotateRefusal::ReuseDetected { .. }))
    ));
    assert!(matches!(
        a.validate(next.token.expose()).unwrap().status,
        TokenStatus::Revoked(tokendb::RevokeReason::ReuseDetected)
    ));
}

/// A rotation whose commit reached the server but whose answer was lost is not run again
/// (which would present the old token a second time: reuse, and a revoked family); one
/// whose commit never arrived is run again. The same for an access token (whose retry would
/// otherwise collide with itself).
#[test]
fn a_lost_commit_answer_is_never_a_second_write() {
    let c = Cluster::new();
    let proxy = CommitBreaker::start(postgres_addr()).unwrap();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        proxy.addr().port()
    );
    let db = c.replica_at(&url, None);
    let other = c.replica(None);
    for (i, mode) in [Break::AfterCommit, Break::BeforeCommit]
        .into_iter()
        .enumerate()
    {
        let issued = db.issue_refresh(&grant(i)).unwrap();
        let broken = proxy.broken();
        proxy.break_next(1, mode);
        let next = db
            .rotate(issued.token.expose(), &grant(i).client_id, None)
            .unwrap();
        assert_eq!(
            proxy.broken(),
            broken + 1,
            "{mode:?}: the commit was broken"
        );
        assert_eq!(next.generation, 2, "{mode:?}");
        assert!(!next.replayed, "{mode:?}");
        assert!(
            other.validate(next.token.expose()).unwrap().is_active(),
            "{mode:?}: one rotation, not a second one taken for reuse"
        );
        assert_eq!(
            other.validate(issued.token.expose()).unwrap().status,
            TokenStatus::Rotated
        );

        proxy.break_next(1, mode);
        let at = db.issue_access(&grant(i)).unwrap();
        assert_eq!(proxy.broken(), broken + 2, "{mode:?}");
        assert!(other.validate(at.token.expose()).unwrap().is_active());
    }
}

/// Deadlines are decided by the database server's clock: a replica whose own clock runs 30 s
/// fast still sees a token that has 10 s left as active, as the other replicas do. With its
/// own clock chosen in the config instead, it would not.
#[test]
fn a_replica_with_a_skewed_clock_decides_by_the_database_clock() {
    #[derive(Debug)]
    struct Fast(u64);
    impl Clock for Fast {
        fn now_ms(&self) -> u64 {
            tokendb::SystemClock.now_ms() + self.0
        }
    }
    let schema = fresh_schema();
    let master = MasterKey::generate();
    let config = || {
        Config::builder()
            .access_lifetime(Duration::from_secs(10))
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .build()
            .unwrap()
    };
    let options = Place::pg_options(&schema);
    let a =
        TokenDb::open_postgres_with(postgres_url(), &master, config(), options.clone()).unwrap();
    let fast = TokenDb::open_postgres_with(
        postgres_url(),
        &master,
        config(),
        options.clone().with_local_clock(Arc::new(Fast(30_000))),
    )
    .unwrap();
    let at = a.issue_access(&grant(1)).unwrap();
    assert!(fast.validate(at.token.expose()).unwrap().is_active());
    // Issued by the fast replica: the same 10 s from the database's now, not 40 s.
    let at2 = fast.issue_access(&grant(2)).unwrap();
    let exp = a.validate(at2.token.expose()).unwrap().expires.unwrap();
    assert!(
        exp.at_ms <= tokendb::SystemClock.now_ms() + 12_000,
        "{exp:?}"
    );

    // The contrast: a replica told to use its own (fast) clock refuses the live token.
    let own = TokenDb::open_postgres_with(
        postgres_url(),
        &master,
        Config::builder()
            .clock(Arc::new(Fast(30_000)))
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .build()
            .unwrap(),
        options,
    )
    .unwrap();
    assert!(!own.validate(at.token.expose()).unwrap().is_active());
}

/// Data-key rotation (add a key, re-seal, retire the old one) and master-key rotation on one
/// replica while another keeps issuing, rotating and validating.
#[test]
fn key_rotations_work_while_another_replica_serves() {
    let c = Cluster::new();
    let (admin, server) = (c.replica(None), c.replica(None));
    let mut live = Vec::new();
    for i in 0..50 {
        live.push(
            server
                .issue_refresh(&grant(i))
                .unwrap()
                .token
                .expose()
                .to_owned(),
        );
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut n = 0;
            let mut tokens = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || n < 20 {
                let i = 1000 + n;
                let rt = server.issue_refresh(&grant(i)).unwrap();
                let next = server
                    .rotate(rt.token.expose(), &grant(i).client_id, None)
                    .unwrap();
                assert!(server.validate(next.token.expose()).unwrap().is_active());
                tokens.push(next.token.expose().to_owned());
                n += 1;
            }
            tokens
        });
        let added = admin.add_sealing_key(&c.master).unwrap();
        let mut cursor = ResealCursor::default();
        loop {
            let batch = admin.reseal_batch(7, cursor).unwrap();
            if !batch.more {
                break;
            }
            cursor = batch.cursor;
        }
        // The serving replica may still have written under the old key before it reloaded:
        // retiring is refused until a re-seal pass finds nothing left.
        let retired = loop {
            match admin.retire_old_sealing_keys(&c.master) {
                Ok(r) => break r,
                Err(Error::Store(StoreError::Invalid(_))) => {
                    let mut cursor = ResealCursor::default();
                    loop {
                        let b = admin.reseal_batch(100, cursor).unwrap();
                        if !b.more {
                            break;
                        }
                        cursor = b.cursor;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert!(!retired.is_empty());
        assert!(!retired.contains(&added));
        let new_master = MasterKey::generate();
        admin.rotate_master_key(&c.master, &new_master).unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let served = worker.join().unwrap();
        (served, new_master)
    });
    let (served, new_master) = served;
    for t in live.iter().chain(&served) {
        assert!(server.validate(t).unwrap().is_active());
        assert!(admin.validate(t).unwrap().is_active());
    }
    // A new replica opens with the new master key only.
    assert!(matches!(
        TokenDb::open_postgres_with(
            postgres_url(),
            &c.master,
            c.config(None),
            Place::pg_options(&c.schema)
        ),
        Err(Error::Store(StoreError::WrongMasterKey))
    ));
    let third = TokenDb::open_postgres_with(
        postgres_url(),
        &new_master,
        c.config(None),
        Place::pg_options(&c.schema),
    )
    .unwrap();
    assert_eq!(third.sealing_keys().held.len(), 1);
    assert!(third.validate(&served[0]).unwrap().is_active());
}

/// A database administrator with full read access sees no token, subject, client id or
/// scope; a row they edit reads as an error, never as other data.
#[test]
fn the_database_administrator_sees_no_secret_and_cannot_edit_a_record_unnoticed() {
    let c = Cluster::new();
    let db = c.replica(None);
    let g =
        tokendb::Grant::new("alice@example.com", "billing-app", "openid payments:write").unwrap();
    let rt = db.issue_refresh(&g).unwrap();
    let at = db.issue_access(&g).unwrap();
    let mut sql = c.sql();
    let mut everything = Vec::new();
    for table in [
        "tokendb_meta",
        "tokendb_families",
        "tokendb_owners",
        "tokendb_tokens",
        "tokendb_grace",
    ] {
        for row in sql
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .unwrap()
        {
            everything.push(row.get::<_, String>(0));
        }
    }
    let dump = everything.join("\n");
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for needle in [
        rt.token.expose(),
        at.token.expose(),
        "alice@example.com",
        "billing-app",
        "payments:write",
    ] {
        assert!(!dump.contains(needle), "{needle} in clear");
        assert!(!dump.contains(&hex(needle)), "{needle} in hex");
    }
    // Flip one bit of the family record's header (its deadlines).
    sql.execute(
        "UPDATE tokendb_families SET record = set_byte(record, 12, get_byte(record, 12) # 1)",
        &[],
    )
    .unwrap();
    let err = db
        .rotate(rt.token.expose(), &g.client_id, None)
        .unwrap_err();
    assert!(matches!(err, Error::Store(StoreError::Corrupt(_))), "{err}");
    assert!(db.introspect(rt.token.expose()).is_err());
    // Moving the access token's record under another token's key is refused too.
    let other = db.issue_access(&g).unwrap();
    sql.execute(
        "UPDATE tokendb_tokens SET record = (SELECT record FROM tokendb_tokens ORDER BY key LIMIT 1) WHERE key = (SELECT key FROM tokendb_tokens ORDER BY key DESC LIMIT 1)",
        &[],
    )
    .unwrap();
    let results = [
        db.validate(at.token.expose()),
        db.validate(other.token.expose()),
    ];
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(Error::Store(StoreError::Corrupt(_))))),
        "{results:?}"
    );
    assert!(
        results.iter().all(|r| match r {
            Ok(v) => v.is_active(),
            Err(_) => true,
        }),
        "{results:?}"
    );
}

#[test]
fn a_newer_schema_another_schema_or_a_wrong_key_is_refused() {
    let c = Cluster::new();
    drop(c.replica(None));
    let open = |master: &MasterKey, schema: &str| {
        TokenDb::open_postgres_with(
            postgres_url(),
            master,
            c.config(None),
            Place::pg_options(schema),
        )
    };
    assert!(matches!(
        open(&MasterKey::generate(), &c.schema),
        Err(Error::Store(StoreError::WrongMasterKey))
    ));
    c.sql()
        .execute(
            "UPDATE tokendb_meta SET value = '\\x00000003' WHERE name = 'schema_version'",
            &[],
        )
        .unwrap();
    assert!(matches!(
        open(&c.master, &c.schema),
        Err(Error::Store(StoreError::NewerFormat {
            found: 3,
            supported: 2
        }))
    ));
    // A schema holding someone else's tables is not taken over.
    let theirs = fresh_schema();
    let mut sql = postgres::Client::connect(postgres_url(), postgres::NoTls).unwrap();
    sql.batch_execute(&format!(
        "CREATE SCHEMA {theirs}; CREATE TABLE {theirs}.orders (id int)"
    ))
    .unwrap();
    assert!(matches!(
        open(&c.master, &theirs),
        Err(Error::Store(StoreError::NotATokenDb(_)))
    ));
    // Bad schema names are refused before any SQL is sent.
    assert!(open(&c.master, "x; DROP TABLE y").is_err());
}

/// A schema of version 1 (written before the commit markers) is upgraded at open, under the
/// creation lock: its tokens still validate and rotate, and the version recorded is 2.
#[test]
fn a_version_1_schema_is_upgraded_at_open_and_keeps_its_tokens() {
    let c = Cluster::new();
    let db = c.replica(None);
    let issued = db.issue_refresh(&grant(1)).unwrap();
    drop(db);
    // What version 1 was: the same tables without `tokendb_commits`.
    c.sql()
        .batch_execute(
            "DROP TABLE tokendb_commits; UPDATE tokendb_meta SET value = '\\x00000001' WHERE name = 'schema_version'",
        )
        .unwrap();
    let db = c.replica(None);
    assert_eq!(
        db.validate(issued.token.expose()).unwrap().status,
        TokenStatus::Active
    );
    let next = db
        .rotate(issued.token.expose(), &grant(1).client_id, None)
        .unwrap();
    assert_eq!(
        db.validate(next.token.expose()).unwrap().status,
        TokenStatus::Active
    );
    let version: Vec<u8> = c
        .sql()
        .query_one(
            "SELECT value FROM tokendb_meta WHERE name = 'schema_version'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, 2u32.to_be_bytes());
    let writers: i64 = c
        .sql()
        .query_one("SELECT count(*) FROM tokendb_commits WHERE seq > 0", &[])
        .unwrap()
        .get(0);
    assert!(writers >= 1, "the rotation's writer recorded its commit");
}

/// Every replica runs its sweeper: together they delete each expired token once, and the
/// families being rotated are left alone.
#[test]
fn sweepers_on_every_replica_share_the_work() {
    let c = Cluster::new();
    let replicas: Vec<TokenDb> = (0..3).map(|_| c.replica(None)).collect();
    let mut live = Vec::new();
    for i in 0..300 {
        replicas[i % 3].issue_access(&grant(i)).unwrap();
        if i % 10 == 0 {
            live.push(replicas[i % 3].issue_refresh(&grant(i)).unwrap());
        }
    }
    c.clock.advance(2 * HOUR);
    let reports: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = replicas
            .iter()
            .map(|db| s.spawn(move || db.sweep_now(None).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let deleted: u64 = reports.iter().map(|r| r.tokens).sum();
    assert_eq!(deleted, 300, "{reports:?}");
    for r in &live {
        assert!(replicas[0].validate(r.token.expose()).unwrap().is_active());
    }
    c.clock.advance(100 * DAY);
    let families: u64 = replicas
        .iter()
        .map(|db| db.sweep_now(None).unwrap().families)
        .sum();
    assert_eq!(families, live.len() as u64);
}
