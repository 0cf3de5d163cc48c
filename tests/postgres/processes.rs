//! Replicas in separate OS processes (`src/bin/pg_replica.rs`), as a deployment runs them.

use crate::common::grant;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tokendb::{Config, MasterKey, SweeperConfig, TokenDb};
use tokendb_tests::place::{Place, fresh_schema, postgres_url};

struct Replica {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Replica {
    fn start(schema: &str, master: &MasterKey, threads: usize, grace_ms: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pg_replica"))
            .args([
                postgres_url(),
                schema,
                &threads.to_string(),
                &grace_ms.to_string(),
            ])
            .env("TOKENDB_CRASH_MASTER", master.to_hex().as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pg_replica");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn answer(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "pg_replica exited");
        line.trim_end().to_owned()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup(grace_ms: u64) -> (String, MasterKey, TokenDb) {
    let schema = fresh_schema();
    let master = MasterKey::generate();
    let mut config = Config::builder().sweeper(SweeperConfig::DEFAULT.with_enabled(false));
    if grace_ms > 0 {
        config = config.grace_period(std::time::Duration::from_millis(grace_ms));
    }
    let db = TokenDb::open_postgres_with(
        postgres_url(),
        &master,
        config.build().unwrap(),
        Place::pg_options(&schema),
    )
    .unwrap();
    (schema, master, db)
}

/// Each round: three processes of 16 threads present one refresh token at the same moment.
/// Returns every thread's answer.
fn race(replicas: &mut [Replica], token: &str, client: &str) -> Vec<String> {
    for r in replicas.iter_mut() {
        r.send(&format!("race {token} {client}"));
    }
    let mut all = Vec::new();
    for r in replicas.iter_mut() {
        let answer = r.answer();
        let results = answer.strip_prefix("done ").expect("a race answer");
        all.extend(results.split(' ').map(str::to_owned));
    }
    all
}

#[test]
fn three_processes_of_16_threads_presenting_one_token_get_one_successor() {
    // With a grace period: one rotation, 47 replays of the same successor.
    let (schema, master, db) = setup(60_000);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&schema, &master, 16, 60_000))
        .collect();
    for round in 0..15 {
        let issued = db.issue_refresh(&grant(round)).unwrap();
        let answers = race(
            &mut replicas,
            issued.token.expose(),
            &grant(round).client_id,
        );
        assert_eq!(answers.len(), 48);
        let ok: Vec<(&str, &str)> = answers
            .iter()
            .filter_map(|a| a.strip_prefix("ok:"))
            .map(|a| a.rsplit_once(':').unwrap())
            .collect();
        assert_eq!(ok.len(), 48, "round {round}: {answers:?}");
        let successors: std::collections::BTreeSet<&str> = ok.iter().map(|(t, _)| *t).collect();
        assert_eq!(successors.len(), 1, "round {round}: two successors");
        assert_eq!(
            ok.iter().filter(|(_, replayed)| *replayed == "0").count(),
            1,
            "round {round}: exactly one rotation"
        );
        let next = successors.into_iter().next().unwrap();
        let v = db.validate(next).unwrap();
        assert!(v.is_active(), "round {round}");
        assert_eq!(
            db.validate(issued.token.expose()).unwrap().status,
            tokendb::TokenStatus::Rotated
        );
        // The next rotation, from any replica, builds on that one successor.
        replicas[round % 3].send(&format!("validate {next}"));
        assert_eq!(replicas[round % 3].answer(), "status Active");
    }

    // Without one: exactly one rotation; every other presentation is reuse (or meets the
    // family already revoked for it), and the family ends revoked.
    let (schema, master, db) = setup(0);
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&schema, &master, 16, 0))
        .collect();
    for round in 0..5 {
        let issued = db.issue_refresh(&grant(round)).unwrap();
        let answers = race(
            &mut replicas,
            issued.token.expose(),
            &grant(round).client_id,
        );
        let ok: Vec<&String> = answers.iter().filter(|a| a.starts_with("ok:")).collect();
        assert_eq!(ok.len(), 1, "round {round}: {answers:?}");
        assert!(
            answers
                .iter()
                .filter(|a| !a.starts_with("ok:"))
                .all(|a| a.contains("ReuseDetected") || a.contains("Revoked(ReuseDetected)")),
            "round {round}: {answers:?}"
        );
        assert!(matches!(
            db.validate(issued.token.expose()).unwrap().status,
            tokendb::TokenStatus::Revoked(tokendb::RevokeReason::ReuseDetected)
        ));
    }
}

#[test]
fn a_revocation_in_one_process_is_seen_by_the_next_validate_of_another() {
    let (schema, master, db) = setup(0);
    let mut a = Replica::start(&schema, &master, 1, 0);
    let mut b = Replica::start(&schema, &master, 1, 0);
    for i in 0..10 {
        let rt = db.issue_refresh(&grant(i)).unwrap();
        let at = db.issue_access(&grant(i)).unwrap();
        for t in [rt.token.expose(), at.token.expose()] {
            b.send(&format!("validate {t}"));
            assert_eq!(b.answer(), "status Active");
            a.send(&format!("revoke {t}"));
            assert!(a.answer().starts_with("revoked "));
            b.send(&format!("validate {t}"));
            assert!(b.answer().starts_with("status Revoked"), "{t}");
        }
    }
}
