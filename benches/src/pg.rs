//! tokendb on PostgreSQL (`tokendb-pg`) beside a plain PostgreSQL token table stored the way the
//! anchors (Ory Hydra, Keycloak, Duende) store tokens (`postgres-plain`), on one throw-away
//! server, in one run.
//!
//! The plain table holds a row per token keyed by a hash of it (`signature`), with the grant in
//! clear columns and indexes on family and expiry (what its janitor needs). A rotation locks the
//! presented row, inserts the successor and marks the predecessor inactive, in one durable
//! transaction; reuse is a lookup that finds an inactive row. tokendb-pg stores one sealed row per
//! family, rewritten by each rotation, and one per access token.
//!
//! Rows: `validate` of random loaded access tokens at each read thread count (plus 16), durable
//! `rotate` at each write client count (each caller rotates its own family, presenting the newest
//! token each time). The two systems' rows of one measurement are interleaved round by round
//! ([`harness::run_interleaved`]: tokendb-pg, plain, tokendb-pg, plain, ...). Figures: rows and
//! bytes per family after one rotation and after 1,000.

use std::sync::Arc;

use postgres::{Client, NoTls};
use rand::RngExt as _;
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use tokendb::{Config, MasterKey, PgOptions, SweeperConfig, TokenDb};

use crate::engine::{self, TokenTexts};
use crate::harness::{self, Arm, Op};
use crate::report::Report;
use crate::servers::{PostgresOptions, PostgresServer};
use crate::systems::{Context, record};
use crate::{BenchResult, error_chain};

/// Name of tokendb's rows.
pub const TOKENDB_PG: &str = "tokendb-pg";
/// Name of the plain table's rows.
pub const PLAIN: &str = "postgres-plain";
/// Writer connections of tokendb-pg's pool in these measurements.
pub const WRITERS: usize = 16;
/// Families of the storage measurement, each rotated [`STORAGE_ROTATIONS`] times.
const STORAGE_FAMILIES: usize = 16;
/// Rotations per family of the storage measurement.
const STORAGE_ROTATIONS: usize = 1_000;
/// Access-token lifetime of the loaded tokens of both systems.
const LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;

fn config() -> BenchResult<Config> {
    Ok(Config::builder()
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .access_lifetime(engine::LIVE_LIFETIME)
        .build()?)
}

fn open(url: &str, master: &MasterKey, schema: &str) -> BenchResult<TokenDb> {
    Ok(TokenDb::open_postgres_with(
        url,
        master,
        config()?,
        PgOptions::default()
            .with_schema(schema)
            .with_writers(WRITERS)
            .with_readers(16),
    )?)
}

/// The plain table, in schema `plain` of the same database.
struct Plain {
    url: String,
}

const PLAIN_SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS plain;
DROP TABLE IF EXISTS plain.tokens;
CREATE TABLE plain.tokens (
    signature bytea PRIMARY KEY,
    kind smallint NOT NULL,
    family bytea NOT NULL,
    active boolean NOT NULL,
    revoked boolean NOT NULL DEFAULT false,
    subject text NOT NULL,
    client_id text NOT NULL,
    scope text NOT NULL,
    issued_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX tokens_family ON plain.tokens (family);
CREATE INDEX tokens_expires ON plain.tokens (expires_at);
";
const PLAIN_LOOKUP: &str = "SELECT active, revoked, expires_at, subject, client_id, scope FROM plain.tokens WHERE signature = $1";
const PLAIN_LOCK: &str =
    "SELECT family, active, revoked, expires_at FROM plain.tokens WHERE signature = $1 FOR UPDATE";
const PLAIN_INSERT: &str = "INSERT INTO plain.tokens (signature, kind, family, active, subject, client_id, scope, issued_at, expires_at) VALUES ($1, $2, $3, true, $4, $5, $6, $7, $8)";
const PLAIN_DEACTIVATE: &str = "UPDATE plain.tokens SET active = false WHERE signature = $1";
const PLAIN_REVOKE_FAMILY: &str = "UPDATE plain.tokens SET revoked = true WHERE family = $1";

fn now_ms() -> i64 {
    use tokendb::Clock as _;
    i64::try_from(tokendb::SystemClock.now_ms()).unwrap_or(i64::MAX)
}

/// A random token text (43 base64url characters, the length of tokendb's secrets).
fn random_token(rng: &mut SmallRng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..43)
        .map(|_| {
            let i = rng.random_range(0..ALPHABET.len());
            ALPHABET.get(i).map_or('A', |b| char::from(*b))
        })
        .collect()
}

fn signature(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

impl Plain {
    fn connect(&self) -> BenchResult<Client> {
        Ok(Client::connect(&self.url, NoTls)?)
    }

    /// Creates the table and loads `n` access tokens; returns their texts, packed.
    fn load(&self, n: usize) -> BenchResult<Vec<u8>> {
        let mut c = self.connect()?;
        c.batch_execute(PLAIN_SCHEMA)?;
        let mut rng = SmallRng::seed_from_u64(0x0070_6c61_696e);
        let mut texts = Vec::with_capacity(n * 43);
        let mut txn = c.transaction()?;
        let insert = txn.prepare(
            "INSERT INTO plain.tokens (signature, kind, family, active, subject, client_id, scope, issued_at, expires_at) \
             SELECT s, 2, s, true, sub, cl, 'openid profile email', $4, $5 FROM unnest($1::bytea[], $2::text[], $3::text[]) AS t(s, sub, cl)",
        )?;
        let now = now_ms();
        for lo in (0..n).step_by(10_000) {
            let hi = (lo + 10_000).min(n);
            let mut sigs = Vec::with_capacity(hi - lo);
            let mut subjects = Vec::with_capacity(hi - lo);
            let mut clients = Vec::with_capacity(hi - lo);
            for i in lo..hi {
                let t = random_token(&mut rng);
                sigs.push(signature(&t).to_vec());
                texts.extend_from_slice(t.as_bytes());
                let g = engine::grant(i)?;
                subjects.push(g.subject.clone());
                clients.push(g.client_id.clone());
            }
            txn.execute(
                &insert,
                &[&sigs, &subjects, &clients, &now, &(now + LIFETIME_MS)],
            )?;
        }
        txn.commit()?;
        c.batch_execute("VACUUM ANALYZE plain.tokens")?;
        c.batch_execute("CHECKPOINT")?;
        Ok(texts)
    }

    fn validate_worker<'a>(&self, texts: &'a [u8]) -> BenchResult<Op<'a>> {
        let mut c = self.connect()?;
        let lookup = c.prepare(PLAIN_LOOKUP)?;
        let n = texts.len() / 43;
        Ok(Box::new(move |rng| {
            let i = rng.random_range(0..n.max(1));
            let t = texts.get(i * 43..(i + 1) * 43).ok_or("plain: no tokens")?;
            let t = std::str::from_utf8(t)?;
            let row = c
                .query_opt(&lookup, &[&signature(t).as_slice()])?
                .ok_or("plain: a loaded token is missing")?;
            let (active, revoked, expires): (bool, bool, i64) =
                (row.get(0), row.get(1), row.get(2));
            if !active || revoked || expires <= now_ms() {
                return Err("plain: a loaded token is not active".into());
            }
            std::hint::black_box((
                row.get::<_, &str>(3),
                row.get::<_, &str>(4),
                row.get::<_, &str>(5),
            ));
            Ok(1)
        }))
    }

    /// Issues a refresh token of a new family for `worker`; returns its text.
    fn issue_refresh(
        &self,
        c: &mut Client,
        worker: usize,
        rng: &mut SmallRng,
    ) -> BenchResult<(String, Vec<u8>)> {
        let t = random_token(rng);
        let family = signature(&t).to_vec();
        let g = engine::grant(worker)?;
        let now = now_ms();
        c.execute(
            PLAIN_INSERT,
            &[
                &signature(&t).as_slice(),
                &1i16,
                &family,
                &g.subject,
                &g.client_id,
                &"openid offline_access",
                &now,
                &(now + 90 * 24 * 3600 * 1000),
            ],
        )?;
        Ok((t, family))
    }

    /// One rotation: lock the presented row; if it is active, insert the successor and mark it
    /// inactive; if not, that is reuse: revoke the family. One durable transaction.
    fn rotate(c: &mut Client, current: &str, rng: &mut SmallRng) -> BenchResult<String> {
        let mut txn = c.transaction()?;
        let row = txn
            .query_opt(PLAIN_LOCK, &[&signature(current).as_slice()])?
            .ok_or("plain: the presented token is missing")?;
        let (family, active, revoked, expires): (Vec<u8>, bool, bool, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if !active || revoked || expires <= now_ms() {
            txn.execute(PLAIN_REVOKE_FAMILY, &[&family])?;
            txn.commit()?;
            return Err("plain: reuse of a rotated token".into());
        }
        let next = random_token(rng);
        let now = now_ms();
        txn.execute(
            PLAIN_INSERT,
            &[
                &signature(&next).as_slice(),
                &1i16,
                &family,
                &"user",
                &"client",
                &"openid offline_access",
                &now,
                &expires,
            ],
        )?;
        txn.execute(PLAIN_DEACTIVATE, &[&signature(current).as_slice()])?;
        txn.commit()?;
        Ok(next)
    }

    fn rotate_worker<'a>(&self, worker: usize) -> BenchResult<Op<'a>> {
        let mut c = self.connect()?;
        let mut rng = SmallRng::seed_from_u64(0xf00d ^ worker as u64 ^ (now_ms() as u64) << 20);
        let (mut current, _) = self.issue_refresh(&mut c, worker, &mut rng)?;
        Ok(Box::new(move |rng| {
            current = Self::rotate(&mut c, &current, rng)?;
            Ok(1)
        }))
    }
}

/// Rows and logical bytes (the sum of `pg_column_size` of every row) of `tables`.
fn storage(c: &mut Client, tables: &[&str]) -> BenchResult<(i64, i64)> {
    let (mut rows, mut bytes) = (0, 0);
    for t in tables {
        let row = c.query_one(
            &format!("SELECT count(*), coalesce(sum(pg_column_size(x.*)), 0)::bigint FROM {t} x"),
            &[],
        )?;
        rows += row.get::<_, i64>(0);
        bytes += row.get::<_, i64>(1);
    }
    Ok((rows, bytes))
}

/// Rotates [`STORAGE_FAMILIES`] families `rotations` times each (one thread per family) and
/// measures what they hold; for tokendb-pg in a schema of its own, for the plain table in a
/// table of its own.
fn storage_per_family(
    url: &str,
    master: &MasterKey,
    rotations: usize,
    report: &mut Report,
) -> BenchResult<()> {
    let schema = format!("tdb_storage_{rotations}");
    let db = open(url, master, &schema)?;
    std::thread::scope(|s| -> BenchResult<()> {
        let handles: Vec<_> = (0..STORAGE_FAMILIES)
            .map(|f| {
                let db = &db;
                s.spawn(move || -> BenchResult<()> {
                    let mut op = engine::rotate_worker(db, 1_000_000 + f)?;
                    let mut rng = SmallRng::seed_from_u64(f as u64);
                    for _ in 0..rotations {
                        op(&mut rng)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a storage thread panicked")??;
        }
        Ok(())
    })?;
    db.close()?;
    let plain = Plain {
        url: url.to_owned(),
    };
    let mut c = plain.connect()?;
    let table = format!("plain.storage_{rotations}");
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (LIKE plain.tokens INCLUDING ALL)"
    ))?;
    std::thread::scope(|s| -> BenchResult<()> {
        let handles: Vec<_> = (0..STORAGE_FAMILIES)
            .map(|f| {
                let (table, url) = (&table, url);
                s.spawn(move || -> BenchResult<()> {
                    let mut c = Client::connect(url, NoTls)?;
                    let mut rng = SmallRng::seed_from_u64(0x5eed ^ f as u64);
                    // The same statements as `Plain::rotate`, on a table of its own.
                    let mut current = {
                        let t = random_token(&mut rng);
                        let now = now_ms();
                        c.execute(
                            &format!("INSERT INTO {table} (signature, kind, family, active, subject, client_id, scope, issued_at, expires_at) VALUES ($1, 1, $2, true, $3, 'client', 'openid offline_access', $4, $5)"),
                            &[&signature(&t).as_slice(), &signature(&t).as_slice(), &format!("user-{f}"), &now, &(now + 90 * 24 * 3600 * 1000)],
                        )?;
                        t
                    };
                    for _ in 0..rotations {
                        let mut txn = c.transaction()?;
                        let row = txn.query_one(
                            &format!("SELECT family, expires_at FROM {table} WHERE signature = $1 AND active FOR UPDATE"),
                            &[&signature(&current).as_slice()],
                        )?;
                        let (family, expires): (Vec<u8>, i64) = (row.get(0), row.get(1));
                        let next = random_token(&mut rng);
                        txn.execute(
                            &format!("INSERT INTO {table} (signature, kind, family, active, subject, client_id, scope, issued_at, expires_at) VALUES ($1, 1, $2, true, $3, 'client', 'openid offline_access', $4, $5)"),
                            &[&signature(&next).as_slice(), &family, &format!("user-{f}"), &now_ms(), &expires],
                        )?;
                        txn.execute(
                            &format!("UPDATE {table} SET active = false WHERE signature = $1"),
                            &[&signature(&current).as_slice()],
                        )?;
                        txn.commit()?;
                        current = next;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a storage thread panicked")??;
        }
        Ok(())
    })?;
    let families = STORAGE_FAMILIES as f64;
    let (rows, bytes) = storage(
        &mut c,
        &[
            &format!("{schema}.tokendb_families"),
            &format!("{schema}.tokendb_owners"),
            &format!("{schema}.tokendb_tokens"),
            &format!("{schema}.tokendb_grace"),
        ],
    )?;
    report.figures.push((
        format!("{TOKENDB_PG} rows per family after {rotations} rotation(s)"),
        rows as f64 / families,
    ));
    report.figures.push((
        format!("{TOKENDB_PG} bytes per family after {rotations} rotation(s)"),
        bytes as f64 / families,
    ));
    let (rows, bytes) = storage(&mut c, &[&table])?;
    report.figures.push((
        format!("{PLAIN} rows per family after {rotations} rotation(s)"),
        rows as f64 / families,
    ));
    report.figures.push((
        format!("{PLAIN} bytes per family after {rotations} rotation(s)"),
        bytes as f64 / families,
    ));
    Ok(())
}

/// tokendb-pg and postgres-plain on one server.
pub fn tokendb_pg(ctx: &Context<'_>, report: &mut Report) {
    let mut server = match PostgresServer::start(ctx.dir, PostgresOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            return report.fail(format!(
                "{TOKENDB_PG}: skipped, server did not start: {}",
                error_chain(&*e)
            ));
        }
    };
    if let Err(e) = measure(ctx, &server.url(), report) {
        report.fail(format!("{TOKENDB_PG}: stopped: {}", error_chain(&*e)));
    }
    report.note(format!(
        "{TOKENDB_PG} / {PLAIN}: PostgreSQL {} on one server ({}); tokendb-pg through TokenDb::open_postgres with {WRITERS} writer connections; the plain table with one connection per client, prepared statements",
        server.version(),
        server.settings().trim_end().replace('\n', ", ")
    ));
    if let Err(e) = server.stop() {
        report.fail(format!("{TOKENDB_PG}: {}", error_chain(&*e)));
    }
}

fn measure(ctx: &Context<'_>, url: &str, report: &mut Report) -> BenchResult<()> {
    let master = MasterKey::generate();
    let db = open(url, &master, "tdb")?;
    let n = ctx.data.len();
    let started = std::time::Instant::now();
    let tokens = engine::load_access(&db, 0, n, engine::LOAD_THREADS, true)?;
    eprintln!(
        "[{TOKENDB_PG}] loaded {n} access tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let tokens = TokenTexts::pack(&tokens)?;
    let plain = Plain {
        url: url.to_owned(),
    };
    let started = std::time::Instant::now();
    let texts = plain.load(n)?;
    eprintln!(
        "[{PLAIN}] loaded {n} access tokens in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    {
        let mut c = plain.connect()?;
        c.batch_execute("VACUUM ANALYZE tdb.tokendb_tokens")?;
        c.batch_execute("CHECKPOINT")?;
    }
    let db = Arc::new(db);
    let mut read_threads = ctx.settings.read_threads.clone();
    if !read_threads.contains(&16) {
        read_threads.push(16);
    }
    for &t in &read_threads {
        let (db, tokens, texts, plain) = (&db, &tokens, &texts, &plain);
        let arms = vec![
            Arm::reads(t, move |_| Ok(engine::validate_worker(db, tokens))),
            Arm::reads(t, move |_| plain.validate_worker(texts)),
        ];
        let mut found = harness::run_interleaved(arms, &ctx.settings.read_timing).into_iter();
        for system in [TOKENDB_PG, PLAIN] {
            let m = found.next().unwrap_or_else(|| Err("not measured".into()));
            record(report, system, "validate", Some("access token"), t, m);
        }
    }
    if !ctx.settings.write_clients.is_empty() {
        for &c in &ctx.settings.write_clients {
            let (db, plain) = (&db, &plain);
            let arms = vec![
                Arm::writes(c, move |w| engine::rotate_worker(db, w)),
                Arm::writes(c, move |w| plain.rotate_worker(w)),
            ];
            let mut found = harness::run_interleaved(arms, &ctx.settings.write_timing).into_iter();
            for system in [TOKENDB_PG, PLAIN] {
                let m = found.next().unwrap_or_else(|| Err("not measured".into()));
                record(report, system, "rotate", Some("durable"), c, m);
            }
        }
        for rotations in [1, STORAGE_ROTATIONS] {
            storage_per_family(url, &master, rotations, report)?;
        }
    }
    Arc::try_unwrap(db)
        .map_err(|_| "tokendb-pg: still shared")?
        .close()?;
    Ok(())
}
