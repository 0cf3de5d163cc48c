//! Crash safety (issue 5, design §7 and §9.2): a child process (`src/bin/crash_child.rs`)
//! issues, rotates and revokes from several threads while its sweeper deletes expired access
//! tokens; it logs every acknowledged operation to a side log, fsynced after the
//! acknowledgement. The test kills it with `SIGKILL` at random moments, round after round on
//! the same file, and checks after reopening:
//!
//! - every acknowledged operation is there: issued families and tokens exist (access tokens
//!   until their deadline), a family is at the acknowledged generation — or one further, only
//!   if a rotation of it was in flight — and acknowledged revocations are revoked;
//! - no half-applied rotation: the newest acknowledged token validates `Active` exactly when
//!   the family is at its generation (its keyed hash is the family's current one), `Rotated`
//!   when one in-flight rotation went through, and every older token validates `Rotated`: no
//!   token is both active and rotated, and no family forked;
//! - every index entry matches its record and back (`Contents::index_problems`);
//! - nothing appeared that no thread asked for: records no log line names are at most the
//!   issues that were in flight at the kills.
//!
//! `SIGKILL` loses no write the kernel accepted, so this proves the engine's own ordering
//! (commit before acknowledgement, one transaction per batch, repair on reopen), not the disk's
//! flush: that is what `Durability::Immediate` asks of redb.

use crate::common::{Backend, Contents, SplitMix, random_seed};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokendb::{
    Clock, Config, FamilyId, ManualClock, MasterKey, RevokeReason, SweeperConfig, SystemClock,
    TokenDb, TokenStatus,
};
#[allow(unused_imports)]
use tokendb_backend::Backend as _;
use tokendb_core::{AccessKey, ParsedToken, RecordState, TokenFormat};
use tokendb_tests::place::Place;

/// Threads in the child.
const CHILD_THREADS: u64 = 4;

/// Starts the child on `db` (created by the caller), logging into `logs`.
pub(crate) fn spawn_child(
    db: &Place,
    logs: &Path,
    master: &MasterKey,
    round: u64,
    seed: u64,
    extra: &[&str],
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash_child"));
    match db {
        Place::File(path) => cmd.arg(path),
        Place::Postgres { url, .. } => cmd.arg(url),
    };
    cmd.arg(logs)
        .arg(round.to_string())
        .arg(CHILD_THREADS.to_string())
        .arg(seed.to_string())
        .args(extra);
    if let Place::Postgres { schema, .. } = db {
        cmd.args(["--postgres-schema", schema]);
    }
    cmd.env("TOKENDB_CRASH_MASTER", master.to_hex().as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crash_child")
}

/// Kills the child with `SIGKILL` (what `Child::kill` sends on Unix) and reaps it. Panics with
/// its stderr if it had already exited: then an operation failed, which is a finding.
pub(crate) fn kill_child(mut child: Child) {
    if let Some(status) = child.try_wait().unwrap() {
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        panic!("crash_child exited on its own ({status}) before the kill:\n{err}");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status}");
}

/// Number of complete acknowledgement lines in the child's logs so far.
pub(crate) fn acks_logged(logs: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(logs).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        n += text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n') && !l.starts_with("P "))
            .count();
    }
    n
}

#[derive(Debug, Default)]
struct FamilyModel {
    /// Acknowledged refresh tokens, generation 1 first.
    tokens: Vec<String>,
    revoked: bool,
    rotate_in_flight: bool,
    revoke_in_flight: bool,
}

#[derive(Debug)]
struct AccessModel {
    family: Option<FamilyId>,
    deadline: u64,
    revoked: bool,
    revoke_in_flight: bool,
}

/// What the side logs promise.
#[derive(Debug, Default)]
pub(crate) struct Model {
    families: BTreeMap<FamilyId, FamilyModel>,
    access: BTreeMap<String, AccessModel>,
    /// Issues of families in flight at a kill (each may or may not be durable).
    families_in_flight: usize,
    /// Issues of access tokens in flight at a kill (a batch counts its tokens).
    tokens_in_flight: usize,
    /// Batch issues in flight at a kill: tag and number of tokens. Each is all or nothing.
    batches_in_flight: Vec<(String, usize)>,
    /// Acknowledged operations.
    pub(crate) acked: usize,
}

impl Model {
    /// Reads every log in `dir`. A line without its newline was cut by the kill: ignored.
    pub(crate) fn read(dir: &Path) -> Self {
        let mut m = Self::default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut pending: Option<String> = None;
            for line in text.split_inclusive('\n') {
                let Some(line) = line.strip_suffix('\n') else {
                    break;
                };
                if let Some(what) = line.strip_prefix("P ") {
                    assert!(
                        pending.is_none(),
                        "{path:?}: two operations in flight at once"
                    );
                    pending = Some(what.to_owned());
                } else {
                    m.apply(line, &path);
                    m.acked += 1;
                    pending = None;
                }
            }
            if let Some(what) = pending {
                m.in_flight(&what);
            }
        }
        m
    }

    fn family(&mut self, hex: &str) -> &mut FamilyModel {
        let id = FamilyId::from_hex(hex).unwrap();
        self.families.get_mut(&id).expect("a family of the log")
    }

    fn apply(&mut self, line: &str, path: &Path) {
        let w: Vec<&str> = line.split(' ').collect();
        match w.as_slice() {
            ["F", f, token] => {
                let prev = self.families.insert(
                    FamilyId::from_hex(f).unwrap(),
                    FamilyModel {
                        tokens: vec![(*token).to_owned()],
                        ..FamilyModel::default()
                    },
                );
                assert!(prev.is_none());
            }
            ["R", f, generation, token] => {
                let fam = self.family(f);
                assert_eq!(
                    generation.parse::<usize>().unwrap(),
                    fam.tokens.len() + 1,
                    "{path:?}: {line}"
                );
                fam.tokens.push((*token).to_owned());
            }
            ["A", f, token, deadline] => {
                let family = FamilyId::from_hex(f).unwrap();
                assert!(self.families.contains_key(&family), "{path:?}: {line}");
                self.add_access(token, Some(family), deadline);
            }
            ["S", token, deadline] => self.add_access(token, None, deadline),
            ["B", _tag, deadline, tokens @ ..] => {
                for token in tokens {
                    self.add_access(token, None, deadline);
                }
            }
            ["V", f] => self.family(f).revoked = true,
            ["X", token] => self.access.get_mut(*token).unwrap().revoked = true,
            _ => panic!("{path:?}: unreadable line {line:?}"),
        }
    }

    fn add_access(&mut self, token: &str, family: Option<FamilyId>, deadline: &str) {
        let prev = self.access.insert(
            token.to_owned(),
            AccessModel {
                family,
                deadline: deadline.parse().unwrap(),
                revoked: false,
                revoke_in_flight: false,
            },
        );
        assert!(prev.is_none());
    }

    fn in_flight(&mut self, what: &str) {
        let w: Vec<&str> = what.split(' ').collect();
        match w.as_slice() {
            ["F"] => self.families_in_flight += 1,
            ["A", _] | ["S"] => self.tokens_in_flight += 1,
            ["B", tag, count] => {
                let count: usize = count.parse().unwrap();
                self.tokens_in_flight += count;
                self.batches_in_flight.push(((*tag).to_owned(), count));
            }
            ["R", f] => self.family(f).rotate_in_flight = true,
            ["V", f] => self.family(f).revoke_in_flight = true,
            ["X", t] => self.access.get_mut(*t).unwrap().revoke_in_flight = true,
            _ => panic!("unreadable pending line {what:?}"),
        }
    }
}

/// Where the database disagrees with what the logs promise; empty if it keeps every promise.
/// `now` is a time after the child's death (its sweeper may have deleted access tokens whose
/// deadline passed before it; none later than `now`).
pub(crate) fn problems(db: &TokenDb, place: &Place, m: &Model, now: u64) -> Vec<String> {
    let c = Contents::of(db, place);
    let mut p = c.index_problems();
    if !c.grace_timers().is_empty() {
        p.push("grace timers, but the grace period is off".into());
    }
    let status = |t: &str| db.validate(t).unwrap().status;
    let requested = TokenStatus::Revoked(RevokeReason::Requested);

    for (id, fm) in &m.families {
        let Some(rec) = c.families.get(id) else {
            p.push(format!("family {id}: acknowledged, but missing"));
            continue;
        };
        let acked = u64::try_from(fm.tokens.len()).unwrap();
        let at_acked = rec.generation == acked;
        let one_ahead = fm.rotate_in_flight && rec.generation == acked + 1;
        if !(at_acked || one_ahead) {
            p.push(format!(
                "family {id}: at generation {}, {acked} acknowledged (a rotation in flight: {})",
                rec.generation, fm.rotate_in_flight
            ));
            continue;
        }
        let revoked = match rec.state {
            RecordState::Active => false,
            RecordState::Revoked { reason, .. } => {
                if reason != RevokeReason::Requested {
                    p.push(format!("family {id}: revoked for {reason:?}"));
                }
                true
            }
        };
        if fm.revoked && !revoked {
            p.push(format!("family {id}: acknowledged revocation lost"));
        }
        if revoked && !fm.revoked && !fm.revoke_in_flight {
            p.push(format!("family {id}: revoked, but no one asked"));
        }
        let newest_want = match (revoked, at_acked) {
            (true, _) => requested,
            (false, true) => TokenStatus::Active,
            (false, false) => TokenStatus::Rotated,
        };
        let older_want = if revoked {
            requested
        } else {
            TokenStatus::Rotated
        };
        for (i, token) in fm.tokens.iter().enumerate() {
            let want = if i + 1 == fm.tokens.len() {
                newest_want
            } else {
                older_want
            };
            let got = status(token);
            if got != want {
                p.push(format!(
                    "family {id} generation {} (record at {}): {got:?}, expected {want:?}",
                    i + 1,
                    rec.generation
                ));
            }
        }
    }

    let keys = db.keys_for_tests();
    let format = TokenFormat::default();
    let mut named = std::collections::HashSet::new();
    for (token, am) in &m.access {
        let Ok(ParsedToken::Access(t)) = format.parse(token) else {
            panic!("not an access token in the log: {token}");
        };
        let id: AccessKey = keys.access_key(&t);
        named.insert(id.to_bytes());
        let Some(rec) = c.tokens.get(&id.to_bytes()) else {
            if am.deadline > now {
                p.push(format!(
                    "access token {id:?}: acknowledged, missing {} ms before its deadline",
                    am.deadline - now
                ));
            }
            continue;
        };
        if rec.family != am.family || rec.deadline != am.deadline {
            p.push(format!(
                "access token {id:?}: family {:?} deadline {}, acknowledged {:?} {}",
                rec.family, rec.deadline, am.family, am.deadline
            ));
        }
        let family_revoked = am
            .family
            .and_then(|f| c.families.get(&f))
            .is_some_and(|r| r.state.is_revoked());
        let must = am.revoked || family_revoked;
        let may = must || am.revoke_in_flight;
        let is = rec.state.is_revoked();
        if must && !is {
            p.push(format!(
                "access token {id:?}: should be revoked (itself: {}, its family: {family_revoked})",
                am.revoked
            ));
        }
        if is && !may {
            p.push(format!("access token {id:?}: revoked, but no one asked"));
        }
        let got = status(token);
        let agrees = match got {
            TokenStatus::Revoked(_) => is,
            TokenStatus::ExpiredAbsolute => !is && now >= rec.deadline,
            TokenStatus::Active => !is && now < rec.deadline,
            _ => false,
        };
        if !agrees {
            p.push(format!(
                "access token {id:?}: validates {got:?} against its record"
            ));
        }
    }

    // A batch in flight at a kill is all there or not at all. Its tokens are found by their
    // subjects; once their deadline has passed, a later round's sweeper may have deleted some.
    for (tag, count) in &m.batches_in_flight {
        let prefix = format!("bat-{tag}-");
        let found: Vec<u64> = c
            .tokens
            .iter()
            .filter(|(k, _)| !named.contains(*k))
            .filter(|(k, rec)| {
                let body = rec.open_body(&AccessKey::from_bytes(k), &keys).unwrap();
                body.subject.starts_with(&prefix)
            })
            .map(|(_, rec)| rec.deadline)
            .collect();
        let maybe_swept = found.iter().any(|d| *d <= now);
        if !found.is_empty() && found.len() != *count && !maybe_swept {
            p.push(format!(
                "batch {tag} in flight: {} of its {count} tokens are stored",
                found.len()
            ));
        }
    }

    let stray_families = c
        .families
        .keys()
        .filter(|f| !m.families.contains_key(f))
        .count();
    if stray_families > m.families_in_flight {
        p.push(format!(
            "{stray_families} families no log names, {} issues were in flight",
            m.families_in_flight
        ));
    }
    let stray_tokens = c.tokens.keys().filter(|t| !named.contains(*t)).count();
    if stray_tokens > m.tokens_in_flight {
        p.push(format!(
            "{stray_tokens} access tokens no log names, {} issues were in flight",
            m.tokens_in_flight
        ));
    }
    p
}

/// A configuration for checking: the wall clock frozen at `now`, no background sweeper.
pub(crate) fn checking_config(now: u64) -> Config {
    Config::builder()
        .clock(Arc::new(ManualClock::new(now)))
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .build()
        .unwrap()
}

/// Reopens the database the child left, checks it against the logs and closes it. Returns how
/// long the open took (information only) and the model.
pub(crate) fn reopen_and_verify(
    place: &Place,
    master: &MasterKey,
    logs: &Path,
) -> (Duration, Model) {
    let now = SystemClock.now_ms();
    let t = Instant::now();
    let db = place.open(master, checking_config(now)).unwrap();
    let opened = t.elapsed();
    let model = Model::read(logs);
    let found = problems(&db, place, &model, now);
    assert!(
        found.is_empty(),
        "after a kill, the database breaks {} promises:\n{}",
        found.len(),
        found.join("\n")
    );
    db.close().unwrap();
    (opened, model)
}

#[test]
fn kills_at_random_moments_lose_no_acknowledged_write_and_tear_nothing() {
    let seed = random_seed();
    println!("crash: seed {seed} (set TOKENDB_TEST_SEED to reuse it)");
    let mut rng = SplitMix(seed);
    let rounds: u64 = std::env::var("TOKENDB_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let dir = tempfile::tempdir().unwrap();
    // On PostgreSQL the child is one replica, killed mid-write; the server keeps running.
    let path = match crate::BACKEND {
        Backend::File => Place::File(dir.path().join("tokens.tdb")),
        Backend::Postgres => Place::fresh_postgres(),
    };
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let master = MasterKey::generate();
    path.create(&master, checking_config(SystemClock.now_ms()))
        .unwrap()
        .close()
        .unwrap();

    let started = Instant::now();
    let mut opens = Vec::new();
    let mut verified = Model::default();
    for round in 0..rounds {
        // Every third round writes one transaction per operation; the others group-commit.
        let extra: &[&str] = if round % 3 == 2 {
            &["--max-batch", "1"]
        } else {
            &[]
        };
        let child = spawn_child(&path, &logs, &master, round, rng.next_u64(), extra);
        std::thread::sleep(Duration::from_millis(rng.range(20, 300)));
        kill_child(child);
        // Check every other round, so that the child also meets a file a kill left behind.
        if round % 2 == 1 || round + 1 == rounds {
            let (opened, model) = reopen_and_verify(&path, &master, &logs);
            opens.push(opened);
            verified = model;
        }
    }
    println!(
        "crash: {rounds} kills in {:?}; {} acknowledged operations kept ({} families, {} access \
         tokens); in flight at kills: {} family issues, {} token issues ({} batches), {} \
         rotations, {} revocations; reopen after kill took {:?} (max {:?})",
        started.elapsed(),
        verified.acked,
        verified.families.len(),
        verified.access.len(),
        verified.families_in_flight,
        verified.tokens_in_flight,
        verified.batches_in_flight.len(),
        verified
            .families
            .values()
            .filter(|f| f.rotate_in_flight)
            .count(),
        verified
            .families
            .values()
            .filter(|f| f.revoke_in_flight)
            .count(),
        opens.iter().sum::<Duration>() / u32::try_from(opens.len()).unwrap(),
        opens.iter().max().unwrap(),
    );
    assert!(
        verified.acked >= 20,
        "the child barely ran ({} acknowledged operations): the test proved little",
        verified.acked
    );
}
