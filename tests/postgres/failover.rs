//! Failover: a primary with a synchronous streaming standby on loopback; two replicas rotate,
//! issue and revoke under load; the primary is killed with `SIGKILL`, the standby promoted, and
//! the replicas, whose URL names both servers with `target_session_attrs=read-write`, reconnect
//! to it on their own. Every rotation and revocation acknowledged before, during and after must
//! be on the promoted server.
//!
//! Opt-in: it starts two more clusters and waits through a failover, so it runs only with
//! `TOKENDB_PG_FAILOVER=1` (`.ci/run` sets it; `docs/operations.md` shows the command).

use crate::common::grant;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokendb::{
    Config, Error, MasterKey, PgOptions, RevokeReason, SweeperConfig, TokenDb, TokenStatus,
};
use tokendb_servers::{PostgresOptions, PostgresServer};

#[derive(Debug, Default)]
struct Acked {
    /// Per family: every acknowledged refresh token, generation 1 first.
    families: BTreeMap<tokendb::FamilyId, Vec<String>>,
    /// Families whose revocation was acknowledged.
    revoked: Vec<tokendb::FamilyId>,
    /// Families with a rotation or revocation that returned an error (it may or may not have
    /// happened: the family is then only checked up to its last acknowledged generation).
    uncertain: Vec<tokendb::FamilyId>,
}

#[test]
fn every_acknowledged_write_survives_a_failover_to_a_synchronous_standby() {
    if std::env::var("TOKENDB_PG_FAILOVER").as_deref() != Ok("1") {
        eprintln!("failover: not run; set TOKENDB_PG_FAILOVER=1 to run it");
        return;
    }
    let base = std::env::temp_dir();
    let options = PostgresOptions {
        shared_buffers_mb: 128,
        max_connections: 100,
        durable: true,
    };
    let mut primary = PostgresServer::start(&base, options).unwrap();
    let standby = primary.start_synchronous_standby(&base).unwrap();
    let url = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=2",
        primary.port(),
        standby.port()
    );
    let master = MasterKey::generate();
    let open = || {
        TokenDb::open_postgres_with(
            &url,
            &master,
            Config::builder()
                .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
                .build()
                .unwrap(),
            PgOptions::default()
                .with_schema("failover")
                .with_writers(4)
                .with_retry_for(Duration::from_secs(90)),
        )
        .unwrap()
    };
    let replicas = [open(), open()];
    let acked = Mutex::new(Acked::default());
    let stop = AtomicBool::new(false);
    let phase = Mutex::new((0usize, 0usize, 0usize)); // acks before kill, during, after promotion
    let stage = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8 {
            let (db, acked, stop, phase, stage) = (&replicas[t % 2], &acked, &stop, &phase, &stage);
            s.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let g = grant(t * 100_000 + n);
                    n += 1;
                    let Ok(issued) = db.issue_refresh(&g) else {
                        continue;
                    };
                    let family = issued.family;
                    acked
                        .lock()
                        .unwrap()
                        .families
                        .insert(family, vec![issued.token.expose().to_owned()]);
                    let mut current = issued.token.expose().to_owned();
                    for r in 0..5 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let result = if r == 4 && n % 3 == 0 {
                            db.revoke(&current).map(|_| None)
                        } else {
                            db.rotate(&current, &g.client_id, None).map(Some)
                        };
                        let mut a = acked.lock().unwrap();
                        match result {
                            Ok(Some(next)) => {
                                current = next.token.expose().to_owned();
                                a.families.get_mut(&family).unwrap().push(current.clone());
                            }
                            Ok(None) => a.revoked.push(family),
                            Err(e) => {
                                eprintln!("failover: {e}");
                                a.uncertain.push(family);
                                break;
                            }
                        }
                        let mut p = phase.lock().unwrap();
                        match stage.load(Ordering::SeqCst) {
                            0 => p.0 += 1,
                            1 => p.1 += 1,
                            _ => p.2 += 1,
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        stage.store(1, Ordering::SeqCst);
        primary.kill_hard().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        standby.promote().unwrap();
        let promoted = Instant::now();
        stage.store(2, Ordering::SeqCst);
        while phase.lock().unwrap().2 < 200 && promoted.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::SeqCst);
    });
    let (before, during, after) = *phase.lock().unwrap();
    eprintln!(
        "failover: {before} writes acknowledged before the kill, {during} between kill and promotion, {after} after"
    );
    assert!(before > 50 && after > 50, "{before} / {during} / {after}");

    // Checked through a new handle, on the promoted server.
    let check = open();
    let a = acked.into_inner().unwrap();
    let mut problems = Vec::new();
    for (family, tokens) in &a.families {
        let revoked = a.revoked.contains(family);
        let uncertain = a.uncertain.contains(family);
        for (i, token) in tokens.iter().enumerate() {
            let newest = i + 1 == tokens.len();
            let status = match check.validate(token) {
                Ok(v) => v.status,
                Err(Error::Store(e)) => {
                    problems.push(format!("{family}: {e}"));
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            let ok = match (revoked, newest, uncertain) {
                (true, _, _) => status == TokenStatus::Revoked(RevokeReason::Requested),
                (false, false, _) => status == TokenStatus::Rotated,
                // The newest acknowledged token: active, or rotated/revoked by a write whose
                // answer was an error (it may have happened).
                (false, true, false) => status == TokenStatus::Active,
                (false, true, true) => matches!(
                    status,
                    TokenStatus::Active
                        | TokenStatus::Rotated
                        | TokenStatus::Revoked(RevokeReason::Requested)
                ),
            };
            if !ok {
                problems.push(format!(
                    "{family} generation {}: {status:?} (revoked {revoked}, newest {newest}, uncertain {uncertain})",
                    i + 1
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} families lost an acknowledged write:\n{}",
        problems.len(),
        a.families.len(),
        problems.join("\n")
    );
    eprintln!(
        "failover: {} families, {} rotations and {} revocations acknowledged, all present after promotion; {} writes answered with an error",
        a.families.len(),
        a.families.values().map(|t| t.len() - 1).sum::<usize>(),
        a.revoked.len(),
        a.uncertain.len()
    );
}
