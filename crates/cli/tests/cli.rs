//! The `tokendb` binary, run against real database files in temporary directories.
//!
//! Fixtures are written with the `tokendb` library (real tokens, real deadlines on the system
//! clock, which is what the command uses); then the built binary is run on them and its exit
//! code, stdout (JSON) and stderr are checked.

// Test code: a failed setup or lookup is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use redb::{ReadableTable, TableDefinition};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Grant, Introspection, ManualClock, MasterKey, SweeperConfig, TokenDb, TokenString,
};

const FAMILIES: TableDefinition<'_, &[u8; 16], &[u8]> = TableDefinition::new("families");
const TOKENS: TableDefinition<'_, &[u8; 40], &[u8]> = TableDefinition::new("tokens");
const RECENT_TOKENS: TableDefinition<'_, &[u8; 40], &[u8; 32]> =
    TableDefinition::new("recent_tokens");
const BY_SUBJECT: TableDefinition<'_, &[u8; 57], ()> = TableDefinition::new("by_subject");

fn now_ms() -> u64 {
    use tokendb::Clock;
    tokendb::SystemClock.now_ms()
}

fn write_key_file(path: &Path, text: &str) {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    use std::io::Write;
    let mut f = opts.open(path).unwrap();
    writeln!(f, "{text}").unwrap();
}

/// A database file with a master key file beside it (in a temporary directory).
struct Fixture {
    dir: tempfile::TempDir,
    path: PathBuf,
    key_file: PathBuf,
    key_hex: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.tdb");
        let key_file = dir.path().join("master.key");
        let key = MasterKey::generate();
        let key_hex = key.to_hex().to_string();
        write_key_file(&key_file, &key_hex);
        Self {
            dir,
            path,
            key_file,
            key_hex,
        }
    }

    fn master(&self) -> MasterKey {
        MasterKey::from_text(&self.key_hex).unwrap()
    }

    fn config() -> tokendb::ConfigBuilder {
        Config::builder().sweeper(SweeperConfig::DEFAULT.with_enabled(false))
    }

    /// Creates the file with `config` and runs `f` on it, then closes it.
    fn create<R>(&self, config: Config, f: impl FnOnce(&TokenDb) -> R) -> R {
        let db = TokenDb::create(&self.path, &self.master(), config).unwrap();
        let r = f(&db);
        db.close().unwrap();
        r
    }

    /// Opens the file with the library, at a fixed time.
    fn open_at(&self, at_ms: u64) -> TokenDb {
        let config = Self::config()
            .clock(Arc::new(ManualClock::new(at_ms)))
            .build()
            .unwrap();
        TokenDb::open(&self.path, &self.master(), config).unwrap()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Runs `tokendb ARGS --master-key-file KEY`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, None)
    }

    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--master-key-file", self.key_file.to_str().unwrap()]);
        run(&all, &[], stdin)
    }

    /// Runs with `--json` and parses stdout.
    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all: Vec<&str> = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        (code(&out), parse(&out))
    }
}

fn run(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokendb"));
    cmd.args(args).env_remove("TOKENDB_MASTER_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tokens of a fixture with every kind of record.
struct Tokens {
    /// Current refresh token of a rotated family, inside its grace window.
    refresh: TokenString,
    /// Its predecessor (rotated).
    rotated: TokenString,
    /// An access token tied to the rotated family.
    bound: TokenString,
    /// Refresh token of a second family, revoked.
    revoked: TokenString,
    /// Standalone access tokens.
    standalone: Vec<TokenString>,
    /// More families' current refresh tokens.
    families: Vec<TokenString>,
}

impl Tokens {
    fn all(&self) -> Vec<&TokenString> {
        let mut v = vec![&self.refresh, &self.rotated, &self.bound, &self.revoked];
        v.extend(&self.standalone);
        v.extend(&self.families);
        v
    }
}

/// A varied file: rotated families (one inside its grace window), tokens tied to families,
/// standalone tokens, a revoked family. `extra` more standalone tokens and families each.
fn populate(fx: &Fixture, extra: usize) -> Tokens {
    let config = Fixture::config()
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    fx.create(config, |db| {
        let grant = Grant::new("alice@example.com", "web", "openid offline_access")
            .unwrap()
            .with_claims(br#"{"amr":["pwd"]}"#.to_vec());
        let first = db.issue_refresh(&grant).unwrap();
        let bound = db.issue_access_for_family(first.family, None).unwrap();
        let next = db.rotate(first.token.expose(), "web", None).unwrap();
        let other = db.issue_refresh(&grant).unwrap();
        db.issue_access_for_family(other.family, None).unwrap();
        db.revoke(other.token.expose()).unwrap();
        let mut standalone = Vec::new();
        let mut families = Vec::new();
        for i in 0..extra {
            let g = Grant::new(format!("user{i}"), "batch", "api:read").unwrap();
            standalone.push(db.issue_access(&g).unwrap().token);
            families.push(db.issue_refresh(&g).unwrap().token);
        }
        Tokens {
            refresh: next.token,
            rotated: first.token,
            bound: bound.token,
            revoked: other.token,
            standalone,
            families,
        }
    })
}

fn introspect_all(fx: &Fixture, tokens: &Tokens, at: u64) -> Vec<Introspection> {
    let db = fx.open_at(at);
    let v = tokens
        .all()
        .iter()
        .map(|t| db.introspect(t.expose()).unwrap())
        .collect();
    db.close().unwrap();
    v
}

fn problems(v: &Value) -> Vec<(String, String, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["table"].as_str().unwrap().to_owned(),
                p["subject"].as_str().unwrap().to_owned(),
                p["problem"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn stats_counts_by_kind_state_and_key() {
    let fx = Fixture::new();
    populate(&fx, 5);
    let (rc, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(rc, 0, "{s}");
    // 7 families: the rotated one, the revoked one, 5 more.
    assert_eq!(s["families"]["total"], 7);
    assert_eq!(s["families"]["active"], 6);
    assert_eq!(s["families"]["in_grace"], 1);
    assert_eq!(s["families"]["revoked"], 1);
    assert_eq!(s["families"]["revoked_by_reason"]["requested"], 1);
    assert_eq!(s["families"]["generations"], 8);
    assert_eq!(s["refresh_tokens"]["live"], 6);
    assert_eq!(s["refresh_tokens"]["rotated"], 1);
    assert_eq!(s["refresh_tokens"]["revoked"], 1);
    assert_eq!(s["access_tokens"]["family_bound"]["active"], 1);
    assert_eq!(s["access_tokens"]["family_bound"]["revoked"], 1);
    assert_eq!(s["access_tokens"]["standalone"]["active"], 5);
    // Access tokens live an hour by default; families 14 days idle.
    assert_eq!(s["expiring"]["hour"]["access_tokens"], 6);
    assert_eq!(s["expiring"]["week"]["families"], 0);
    assert_eq!(s["records"], 14);
    assert!(s["file_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        s["bytes_per_token"].as_u64().unwrap(),
        s["file_bytes"].as_u64().unwrap() / 14
    );
    assert_eq!(s["keys"]["current"], 1);
    assert_eq!(s["keys"]["held"], serde_json::json!([1]));
    assert_eq!(s["keys"]["records_by_key"]["1"], 14);
    assert_eq!(s["sweeper"]["due"], 0);

    let out = fx.run(&["stats", fx.path_str()]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert!(text.contains("refresh tokens  live 6, rotated 1"), "{text}");
    assert!(text.contains("current sealing key 1"), "{text}");
}

#[test]
fn master_key_comes_from_a_file_or_the_environment_only() {
    let fx = Fixture::new();
    populate(&fx, 0);
    // From the environment, hex and base64.
    let out = run(
        &["stats", fx.path_str(), "--json"],
        &[("TOKENDB_MASTER_KEY", &fx.key_hex)],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // No key at all: a usage error that says where a key may come from.
    let out = run(&["stats", fx.path_str()], &[], None);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("--master-key-file"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("TOKENDB_MASTER_KEY"));
    // Never as a plain argument.
    let out = run(
        &["stats", fx.path_str(), "--master-key", &fx.key_hex],
        &[],
        None,
    );
    assert_eq!(code(&out), 2);
    // A key file without a key in it.
    let junk = fx.file("junk.key");
    write_key_file(&junk, "not a key");
    let out = run(
        &[
            "stats",
            fx.path_str(),
            "--master-key-file",
            junk.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("64 hex digits"), "{}", stderr(&out));
    // A key file that is not there.
    let out = run(
        &[
            "stats",
            fx.path_str(),
            "--master-key-file",
            "/nonexistent/key",
        ],
        &[],
        None,
    );
    assert_eq!(code(&out), 2);
}

#[test]
fn wrong_key_missing_file_foreign_file_and_locked_file_are_refused_clearly() {
    let fx = Fixture::new();
    populate(&fx, 0);
    let before = std::fs::read(&fx.path).unwrap();
    let wrong = MasterKey::generate().to_hex().to_string();
    for cmd in [
        vec!["stats"],
        vec!["verify"],
        vec!["sweep"],
        vec!["compact"],
        vec!["rekey", "--data-key"],
    ] {
        let mut args = cmd.clone();
        args.push(fx.path_str());
        let out = run(&args, &[("TOKENDB_MASTER_KEY", &wrong)], None);
        assert_eq!(code(&out), 3, "{cmd:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("wrong master key"),
            "{}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("next:"), "{}", stderr(&out));
    }
    assert_eq!(
        std::fs::read(&fx.path).unwrap(),
        before,
        "a refused open writes nothing"
    );
    let out = run(
        &["stats", fx.path_str(), "--json"],
        &[("TOKENDB_MASTER_KEY", &wrong)],
        None,
    );
    assert_eq!(code(&out), 3);
    let v = parse(&out);
    assert_eq!(v["error"]["kind"], "wrong_master_key");
    assert_eq!(v["error"]["exit_code"], 3);
    assert!(v["error"]["hint"].as_str().unwrap().contains("re-keyed"));

    // Missing file.
    let missing = fx.file("missing.tdb");
    let out = fx.run(&["verify", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    assert!(!missing.exists(), "never creates a database");

    // Not a tokendb file.
    let junk = fx.file("junk.tdb");
    std::fs::write(&junk, b"hello, I am a text file\n").unwrap();
    let (rc, v) = fx.json(&["stats", junk.to_str().unwrap()]);
    assert_eq!(rc, 3);
    assert_eq!(v["error"]["kind"], "not_a_tokendb");

    // Open in another process (here: this one, through the library).
    let db = fx.open_at(now_ms());
    let (rc, v) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(rc, 5);
    assert_eq!(v["error"]["kind"], "locked");
    db.close().unwrap();
}

#[test]
fn inspect_answers_like_introspection_and_reads_the_token_from_stdin() {
    let fx = Fixture::new();
    let t = populate(&fx, 1);

    let out = fx.run_stdin(
        &["inspect", fx.path_str(), "-", "--json"],
        Some(&format!("{}\n", t.refresh.expose())),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = parse(&out);
    assert_eq!(v["active"], true);
    assert_eq!(v["status"], "active");
    assert_eq!(v["token_type"], "refresh_token");
    assert_eq!(v["sub"], "alice@example.com");
    assert_eq!(v["client_id"], "web");
    assert_eq!(v["scope"], "offline_access openid");
    assert_eq!(v["claims"]["amr"][0], "pwd");
    assert_eq!(v["family"].as_str().unwrap().len(), 32);
    assert!(v["exp"].as_u64().unwrap() > now_ms() / 1000);

    let (rc, v) = fx.json(&["inspect", fx.path_str(), t.bound.expose()]);
    assert_eq!(rc, 0);
    assert_eq!(v["active"], true);
    assert_eq!(v["token_type"], "access_token");

    let (_, v) = fx.json(&["inspect", fx.path_str(), t.rotated.expose()]);
    assert_eq!(v["active"], false);
    assert_eq!(v["status"], "rotated");
    assert!(v.get("sub").is_none(), "an inactive token shows no claims");

    let (_, v) = fx.json(&["inspect", fx.path_str(), t.revoked.expose()]);
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revoked_reason"], "requested");

    // A well-formed token of another database.
    let other = Fixture::new();
    let foreign = populate(&other, 0);
    let (_, v) = fx.json(&["inspect", fx.path_str(), foreign.refresh.expose()]);
    assert_eq!(v["status"], "unknown");

    let out = fx.run(&["inspect", fx.path_str(), "tdb_at_garbage"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("malformed token"));

    let out = fx.run(&["inspect", fx.path_str(), t.refresh.expose()]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).starts_with("refresh_token: active"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn revoke_by_token_family_subject_and_client() {
    let fx = Fixture::new();
    let t = populate(&fx, 3);

    // By token, from stdin: a refresh token takes its family and its access tokens.
    let out = fx.run_stdin(
        &["revoke", fx.path_str(), "--token", "-", "--json"],
        Some(t.refresh.expose()),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v = parse(&out);
    assert_eq!(v["revoked"]["families"], 1);
    assert_eq!(v["revoked"]["access_tokens"], 1);
    let (_, v) = fx.json(&["inspect", fx.path_str(), t.bound.expose()]);
    assert_eq!(v["status"], "revoked");
    assert_eq!(v["revoked_reason"], "family");

    // By family id, as inspect shows it.
    let (_, v) = fx.json(&["inspect", fx.path_str(), t.families[0].expose()]);
    let family = v["family"].as_str().unwrap().to_owned();
    let (rc, v) = fx.json(&["revoke", fx.path_str(), "--family", &family]);
    assert_eq!(rc, 0);
    assert_eq!(v["revoked"]["families"], 1);
    let (_, v) = fx.json(&["inspect", fx.path_str(), t.families[0].expose()]);
    assert_eq!(v["status"], "revoked");

    // By subject and client: only that pair.
    let (_, v) = fx.json(&[
        "revoke",
        fx.path_str(),
        "--subject",
        "user1",
        "--client",
        "elsewhere",
    ]);
    assert_eq!(v["revoked"]["families"], 0);
    let (_, v) = fx.json(&[
        "revoke",
        fx.path_str(),
        "--subject",
        "user1",
        "--client",
        "batch",
    ]);
    assert_eq!(v["revoked"]["families"], 1);
    assert_eq!(v["revoked"]["access_tokens"], 1);
    // By client: what is left of `batch` (user2's family and token, user0's token).
    let (_, v) = fx.json(&["revoke", fx.path_str(), "--client", "batch"]);
    assert_eq!(v["revoked"]["families"], 1);
    assert_eq!(v["revoked"]["access_tokens"], 2);
    let (_, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(s["families"]["active"], 0);
    assert_eq!(s["families"]["revoked_by_reason"]["client"], 1);
    assert_eq!(s["families"]["revoked_by_reason"]["subject"], 1);

    // Usage errors.
    for args in [
        vec!["revoke", fx.path_str()],
        vec![
            "revoke",
            fx.path_str(),
            "--family",
            &family,
            "--client",
            "x",
        ],
        vec!["revoke", fx.path_str(), "--family", "xyz"],
        vec!["revoke", fx.path_str(), "--token", "tdb_rt_nope"],
    ] {
        let out = fx.run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let (rc, _) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0);
}

#[test]
fn sweep_deletes_what_expired_in_batches_and_summarises() {
    let fx = Fixture::new();
    let config = Fixture::config()
        .access_lifetime(Duration::from_millis(1))
        .refresh_lifetime(Duration::from_millis(1), Duration::from_millis(1))
        .build()
        .unwrap();
    fx.create(config, |db| {
        let g = Grant::new("bob", "cli", "read").unwrap();
        for _ in 0..6 {
            db.issue_access(&g).unwrap();
            db.issue_refresh(&g).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    let (_, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(s["sweeper"]["due"], 12);
    assert!(s["sweeper"]["lag_ms"].as_u64().unwrap() > 0);
    assert_eq!(s["access_tokens"]["standalone"]["expired"], 6);
    assert_eq!(s["families"]["expired_absolute"], 6);

    let out = fx.run(&[
        "sweep",
        fx.path_str(),
        "--limit",
        "5",
        "--batch",
        "2",
        "--json",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        out.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        stderr(&out)
    );
    let v = parse(&out);
    assert_eq!(v["due_before"], 12);
    assert_eq!(v["examined"], 5);
    assert_eq!(v["batches"], 3);
    assert_eq!(v["remaining_due"], 7);
    assert_eq!(
        v["families_deleted"].as_u64().unwrap() + v["access_tokens_deleted"].as_u64().unwrap(),
        5
    );

    let out = fx.run(&["sweep", fx.path_str()]);
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("examined 7 of 7 due entries"),
        "{}",
        stdout(&out)
    );
    let (_, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(s["records"], 0);
    assert_eq!(s["sweeper"]["due"], 0);
    assert_eq!(s["index_entries"]["by_subject"], 0);
    assert!(s["index_entries"]["subject_tokens"].is_u64(), "{s}");
    assert!(s["index_entries"]["client_tokens"].is_u64(), "{s}");
    let (rc, _) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0);
}

#[test]
fn verify_passes_a_sound_file_and_reports_a_corrupted_one() {
    let fx = Fixture::new();
    let t = populate(&fx, 4);
    let (rc, v) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["families"], 6);
    assert_eq!(v["access_tokens"], 6);
    assert!(v["index_entries"].as_u64().unwrap() >= 6 * 3 + 6);
    assert_eq!(v["problem_count"], 0);

    // Damage through redb itself (every redb checksum stays valid): a family header byte, the
    // last byte of an access token (its sealed body), one token's index entries removed, one
    // by_subject entry pointing nowhere.
    let target_token;
    {
        let db = redb::Database::open(&fx.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut fams = txn.open_table(FAMILIES).unwrap();
            let (k, mut v) = {
                let (k, v) = fams.first().unwrap().unwrap();
                (*k.value(), v.value().to_vec())
            };
            v[20] ^= 0x01;
            fams.insert(&k, v.as_slice()).unwrap();

            let mut toks = txn.open_table(TOKENS).unwrap();
            let (k, mut v) = {
                let (k, v) = toks.last().unwrap().unwrap();
                (*k.value(), v.value().to_vec())
            };
            *v.last_mut().unwrap() ^= 0x80;
            toks.insert(&k, v.as_slice()).unwrap();
            target_token = k;

            let mut st = txn.open_table(RECENT_TOKENS).unwrap();
            // Remove the index entries (not merged yet: one recent entry, keyed by access key,
            // holding the subject and client hashes) of an access token that is not otherwise
            // damaged.
            let victim = st
                .iter()
                .unwrap()
                .map(|e| *e.unwrap().0.value())
                .find(|k| k[..] != target_token[..])
                .unwrap();
            st.remove(&victim).unwrap();

            let mut subj = txn.open_table(BY_SUBJECT).unwrap();
            let mut dangling = [0u8; 57];
            dangling[..16].fill(0x42);
            dangling[16] = 1; // a family…
            dangling[17..33].fill(0x42);
            subj.insert(&dangling, ()).unwrap(); // …that does not exist
        }
        txn.commit().unwrap();
    }
    let out = fx.run(&["verify", fx.path_str(), "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let v = parse(&out);
    assert_eq!(v["ok"], false);
    let p = problems(&v);
    let token_hex: String = target_token[8..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        p.iter()
            .any(|(t, _, w)| t == "families" && w.contains("unreadable")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|(t, s, _)| t == "tokens" && s.contains(&token_hex)),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|(t, _, w)| t == "tokens" && w.contains("no `subject_tokens` entry")),
        "{p:#?}"
    );
    assert!(
        p.iter()
            .any(|(t, _, w)| t == "by_subject" && w.contains("does not exist")),
        "{p:#?}"
    );
    assert_eq!(v["problem_count"].as_u64().unwrap(), p.len() as u64);

    // Text form lists them and says what to do next.
    let out = fx.run(&["verify", fx.path_str(), "--max-problems", "1"]);
    assert_eq!(code(&out), 1);
    let text = stdout(&out);
    assert!(text.contains("problems found"), "{text}");
    assert!(text.contains("more (raise --max-problems"), "{text}");
    assert!(text.contains("backup"), "{text}");

    // Stats still run, and count what does not authenticate.
    let (rc, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(rc, 0);
    assert!(s["unreadable_records"].as_u64().unwrap() >= 1);

    // The undamaged tokens still answer; the damaged one is an error that points at verify,
    // never altered data.
    let mut answered = 0;
    for tok in &t.standalone {
        let (rc, v) = fx.json(&["inspect", fx.path_str(), tok.expose()]);
        match rc {
            0 => {
                assert_eq!(v["status"], "active", "{v}");
                answered += 1;
            }
            4 => {
                assert_eq!(v["error"]["kind"], "damaged_record", "{v}");
                assert!(v["error"]["hint"].as_str().unwrap().contains("verify"));
            }
            other => panic!("exit {other}: {v}"),
        }
    }
    assert!(answered >= t.standalone.len() - 1);
}

#[test]
fn verify_reports_a_byte_flipped_in_the_raw_file() {
    let fx = Fixture::new();
    populate(&fx, 2);
    // Find one family record's bytes in the file, and flip a byte of its sealed body wherever
    // the file holds a copy of them.
    let record = {
        let db = redb::Database::open(&fx.path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let fams = txn.open_table(FAMILIES).unwrap();
        let (_, v) = fams.first().unwrap().unwrap();
        v.value().to_vec()
    };
    let mut file = std::fs::read(&fx.path).unwrap();
    let at: Vec<usize> = file
        .windows(record.len())
        .enumerate()
        .filter(|(_, w)| *w == record.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(!at.is_empty(), "the record is in the file");
    for i in &at {
        file[i + record.len() - 5] ^= 0x10;
    }
    std::fs::write(&fx.path, &file).unwrap();
    let out = fx.run(&["verify", fx.path_str(), "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let p = problems(&parse(&out));
    assert!(p.iter().any(|(t, _, _)| t == "families"), "{p:#?}");
}

#[test]
fn data_key_rekey_killed_half_way_then_resumed() {
    let fx = Fixture::new();
    let t = populate(&fx, 12);
    let at = now_ms() + 1_000;
    let before = introspect_all(&fx, &t, at);
    assert!(before.iter().filter(|i| i.is_active()).count() >= 26);
    let records = 2 + 12 + 2 + 12; // families, then access tokens

    // Killed after 3 batches of 5 records: the process exits without closing the file.
    let out = fx.run(&[
        "rekey",
        fx.path_str(),
        "--data-key",
        "--batch",
        "5",
        "--stop-after-batches",
        "3",
    ]);
    assert_eq!(code(&out), 99, "{}", stderr(&out));
    let (_, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(s["keys"]["current"], 2);
    assert_eq!(s["keys"]["held"], serde_json::json!([1, 2]));
    assert_eq!(s["keys"]["records_by_key"]["2"], 15);
    assert_eq!(s["keys"]["records_by_key"]["1"], records - 15);
    // Half-way is a sound state: every record opens under its own key.
    let (rc, v) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(introspect_all(&fx, &t, at), before);

    // Run again: it resumes under key 2 rather than drawing key 3, and retires key 1.
    let (rc, v) = fx.json(&["rekey", fx.path_str(), "--data-key", "--batch", "5"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["resumed"], true);
    assert_eq!(v["sealing_key"], 2);
    assert_eq!(v["resealed"], records - 15);
    assert_eq!(v["retired"], serde_json::json!([1]));
    assert_eq!(v["held"], serde_json::json!([2]));

    let (rc, v) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(
        v["keys"]["records_by_key"],
        serde_json::json!({ "2": records })
    );
    let (_, s) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(s["keys"]["held"], serde_json::json!([2]));
    assert_eq!(
        s["keys"]["records_by_key"],
        serde_json::json!({ "2": records })
    );
    // Every token gives the same introspection answer as before.
    assert_eq!(introspect_all(&fx, &t, at), before);
    // And through the command: the grace-window family's token, claims and all.
    let (_, v) = fx.json(&["inspect", fx.path_str(), t.refresh.expose()]);
    assert_eq!(v["active"], true);
    assert_eq!(v["claims"]["amr"][0], "pwd");

    // A later rotation draws a new key.
    let out = fx.run(&["rekey", fx.path_str(), "--data-key"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("drew sealing key 3"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("retired key(s) 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(introspect_all(&fx, &t, at), before);
}

#[test]
fn master_key_rekey_rewraps_and_only_the_new_key_opens() {
    let fx = Fixture::new();
    let t = populate(&fx, 1);
    let at = now_ms() + 1_000;
    let before = introspect_all(&fx, &t, at);
    let new_key = MasterKey::generate().to_hex().to_string();
    let new_file = fx.file("new.key");
    write_key_file(&new_file, &new_key);

    let (rc, v) = fx.json(&[
        "rekey",
        fx.path_str(),
        "--new-master-key-file",
        new_file.to_str().unwrap(),
    ]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["records_rewritten"], 0);
    // The old key is refused now; the new one opens it, and the tokens are unchanged.
    let (rc, v) = fx.json(&["stats", fx.path_str()]);
    assert_eq!(rc, 3);
    assert_eq!(v["error"]["kind"], "wrong_master_key");
    let out = run(
        &["verify", fx.path_str(), "--json"],
        &[("TOKENDB_MASTER_KEY", &new_key)],
        None,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let new_master = MasterKey::from_text(&new_key).unwrap();
    let db = TokenDb::open(
        &fx.path,
        &new_master,
        Fixture::config()
            .clock(Arc::new(ManualClock::new(at)))
            .build()
            .unwrap(),
    )
    .unwrap();
    let after: Vec<_> = t
        .all()
        .iter()
        .map(|x| db.introspect(x.expose()).unwrap())
        .collect();
    db.close().unwrap();
    assert_eq!(after, before);

    // Same key again: refused as a mistake. Missing --new-master-key-file/--data-key: usage.
    let out = run(
        &[
            "rekey",
            fx.path_str(),
            "--new-master-key-file",
            new_file.to_str().unwrap(),
            "--master-key-file",
            new_file.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let out = run(
        &[
            "rekey",
            fx.path_str(),
            "--master-key-file",
            new_file.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_eq!(code(&out), 2);
}

#[test]
fn compact_and_backup() {
    let fx = Fixture::new();
    let config = Fixture::config()
        .access_lifetime(Duration::from_millis(1))
        .build()
        .unwrap();
    fx.create(config, |db| {
        let g = Grant::new("carol", "svc", "read")
            .unwrap()
            .with_claims(vec![b'x'; 4096]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        db.issue_access(&g).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        db.issue_refresh(&g).unwrap();
    });
    std::thread::sleep(Duration::from_millis(10));
    let (rc, v) = fx.json(&["sweep", fx.path_str()]);
    assert_eq!(rc, 0);
    assert_eq!(v["access_tokens_deleted"], 400);

    let (rc, v) = fx.json(&["compact", fx.path_str()]);
    assert_eq!(rc, 0, "{v}");
    let (b, a) = (
        v["bytes_before"].as_u64().unwrap(),
        v["bytes_after"].as_u64().unwrap(),
    );
    assert!(a < b, "compaction returned space: {b} -> {a}");
    assert_eq!(std::fs::metadata(&fx.path).unwrap().len(), a);
    let (rc, _) = fx.json(&["verify", fx.path_str()]);
    assert_eq!(rc, 0);

    // Backup: a copy that opens with the same key and holds the same records.
    let dest = fx.file("copy.tdb");
    let (rc, v) = fx.json(&["backup", fx.path_str(), dest.to_str().unwrap()]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["records"], 1);
    let (rc, v) = fx.json(&["verify", dest.to_str().unwrap()]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["families"], 1);
    // Never over an existing file; never while another process has the database open.
    let (rc, v) = fx.json(&["backup", fx.path_str(), dest.to_str().unwrap()]);
    assert_eq!(rc, 2, "{v}");
    let db = fx.open_at(now_ms());
    let (rc, _) = fx.json(&["backup", fx.path_str(), fx.file("c2.tdb").to_str().unwrap()]);
    assert_eq!(rc, 5);
    db.close().unwrap();
    assert!(!fx.file("c2.tdb").exists());
}

#[test]
fn help_documents_exit_codes_and_key_sources() {
    let out = run(&["--help"], &[], None);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for needle in [
        "Exit codes",
        "TOKENDB_MASTER_KEY",
        "verify",
        "rekey",
        "compact",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let out = run(&["stats"], &[], None);
    assert_eq!(code(&out), 2, "clap usage errors exit 2");
}

/// `tokendb demo --postgres URL` tells the whole story on PostgreSQL (a throw-away server this
/// test starts), and a second run reopens the same tables with the demo's key file.
#[test]
fn the_demo_runs_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let url = tokendb_tests::place::postgres_url();
    for round in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_tokendb"))
            .args(["demo", "--postgres", url, "--tokens", "300"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("reuse detected"), "{stdout}");
        assert!(stdout.contains("validated 300 (300 active)"), "{stdout}");
        assert!(dir.path().join("tokendb-demo-postgres.key").exists());
    }
}

/// `inspect` shows a sender-constrained token's `cnf`, as introspection does, and a bearer
/// token has none.
#[test]
fn inspect_shows_the_sender_constraint() {
    let fx = Fixture::new();
    let key =
        tokendb::Confirmation::jkt_from_base64url("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
            .unwrap();
    let (bound, bearer) = fx.create(Fixture::config().build().unwrap(), |db| {
        let g = Grant::new("alice", "spa", "openid").unwrap();
        let bound = db.issue_refresh(&g.clone().with_confirmation(key)).unwrap();
        let bearer = db.issue_refresh(&g).unwrap();
        (bound.token, bearer.token)
    });
    let (rc, v) = fx.json(&["inspect", fx.path_str(), bound.expose()]);
    assert_eq!(rc, 0);
    assert_eq!(
        v["cnf"]["jkt"],
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    let out = fx.run(&["inspect", fx.path_str(), bound.expose()]);
    assert!(
        stdout(&out).contains("cnf         jkt NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"),
        "{}",
        stdout(&out)
    );
    let (_, v) = fx.json(&["inspect", fx.path_str(), bearer.expose()]);
    assert!(v.get("cnf").is_none());
}
