//! Criterion benches of tokendb's hot paths, named `group/case`:
//!
//! - `token/parse_access`, `token/parse_refresh`: wire format parsing (base64url, checksum);
//! - `token/id_hash`: the keyed BLAKE3 token id of a secret;
//! - `seal/record_body`, `open/record_body`: XChaCha20-Poly1305 of an access record's body (what
//!   `issue` and `introspect` pay), and `record/decode_access`: header MAC check and decode (what
//!   `validate` pays);
//! - `lookup/validate`, `lookup/introspect`: through `TokenDb` on a database of 10,000 tokens;
//! - `write/rotate`: one durable rotation by a lone caller (one commit, one fsync each);
//! - `write/issue_x64`: 64 callers issuing one standalone access token each, at once (group
//!   commit), on 100,000 tokens; also prints the bytes written per token;
//! - `sweep/batch_1000`: one sweeper batch deleting 1,000 expired tokens (one write transaction).
//!
//! ```text
//! cargo bench -p tokendb-benches --bench engine                 # all
//! cargo bench -p tokendb-benches --bench engine -- lookup/      # a group
//! RUSTFLAGS='--cfg poly1305_backend="soft"' cargo bench -p tokendb-benches --bench engine -- open/
//! ```
//!
//! Sample sizes are small (the machine is shared and writes cost an fsync); the comparison with
//! other systems is the `compare` binary's job.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use tokendb_benches::engine::{self, Engine};
use tokendb_core::{
    AccessRecord, AccessToken, FamilyId, KeyRing, RecordBody, RecordState, RefreshToken,
    TokenFormat, TokenKind, TokenSecret,
};

/// Tokens in the database of the `lookup` group.
const LOOKUP_TOKENS: usize = 10_000;

fn body() -> RecordBody {
    let g = engine::grant(42).unwrap();
    RecordBody {
        subject: g.subject,
        client_id: g.client_id,
        scope: g.scope,
        claims: g.claims,
    }
}

fn token(c: &mut Criterion) {
    let keys = KeyRing::generate();
    let format = TokenFormat::default();
    let access = format.encode_access(&AccessToken::mint(1_800_000_000_000));
    let refresh = format.encode_refresh(&RefreshToken::mint(&keys, FamilyId::generate(), 7));
    let secret = TokenSecret::generate();
    let mut g = c.benchmark_group("token");
    g.bench_function("parse_access", |b| {
        b.iter(|| format.parse(black_box(access.expose())).unwrap())
    });
    g.bench_function("parse_refresh", |b| {
        b.iter(|| format.parse(black_box(refresh.expose())).unwrap())
    });
    g.bench_function("id_hash", |b| {
        b.iter(|| keys.token_id(TokenKind::Access, black_box(&secret)))
    });
    g.finish();
}

fn crypto(c: &mut Criterion) {
    let keys = KeyRing::generate();
    let id = keys.access_key(&AccessToken::mint(1_800_000_000_000));
    let body = body();
    let (key_id, sealed) = AccessRecord::seal_body(&keys, &id, &body).unwrap();
    let record = AccessRecord {
        key_id,
        state: RecordState::Active,
        family: None,
        subject: keys.subject_hash(&body.subject),
        client: keys.client_hash(&body.client_id),
        issued_at: 1,
        deadline: 1_800_000_000_000,
        body: sealed,
        confirmation: None,
    };
    let stored = record.encode(&id, &keys).unwrap();

    let mut g = c.benchmark_group("seal");
    g.bench_function("record_body", |b| {
        b.iter(|| AccessRecord::seal_body(&keys, &id, black_box(&body)).unwrap())
    });
    g.finish();
    let mut g = c.benchmark_group("open");
    g.bench_function("record_body", |b| {
        b.iter(|| black_box(&record).open_body(&id, &keys).unwrap())
    });
    g.finish();
    // A sender-constrained token (version 3): its status check verifies the record MAC too.
    let bound = AccessRecord {
        confirmation: Some(tokendb_core::Confirmation::Jkt([7; 32])),
        ..record.clone()
    }
    .encode(&id, &keys)
    .unwrap();
    let mut g = c.benchmark_group("record");
    g.bench_function("decode_access", |b| {
        b.iter(|| AccessRecord::decode(black_box(&stored), &id, &keys).unwrap())
    });
    g.bench_function("decode_status", |b| {
        b.iter(|| AccessRecord::decode_status(black_box(&stored), &id, &keys).unwrap())
    });
    g.bench_function("decode_status_bound", |b| {
        b.iter(|| AccessRecord::decode_status(black_box(&bound), &id, &keys).unwrap())
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut eng = Engine::create(
        dir.path(),
        engine::LOAD_WRITER,
        engine::LIVE_LIFETIME,
        engine::CACHE_BYTES,
    )
    .unwrap();
    let tokens = engine::load_access(eng.db().unwrap(), 0, LOOKUP_TOKENS, 64, true).unwrap();
    eng.reopen(engine::GROUP_WRITER, engine::LIVE_LIFETIME)
        .unwrap();
    let db = eng.db().unwrap();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut g = c.benchmark_group("lookup");
    g.bench_function("validate", |b| {
        b.iter(|| {
            let t = &tokens[rng.random_range(0..tokens.len())];
            assert!(db.validate(t.expose()).unwrap().is_active());
        })
    });
    g.bench_function("introspect", |b| {
        b.iter(|| {
            let t = &tokens[rng.random_range(0..tokens.len())];
            assert!(db.introspect(t.expose()).unwrap().is_active());
        })
    });
    g.finish();
    eng.close().unwrap();
}

fn write(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut eng = Engine::create(
        dir.path(),
        engine::GROUP_WRITER,
        engine::LIVE_LIFETIME,
        engine::CACHE_BYTES,
    )
    .unwrap();
    let db = eng.db().unwrap();
    let mut rotate = engine::rotate_worker(db, 0).unwrap();
    let mut rng = SmallRng::seed_from_u64(2);
    let mut g = c.benchmark_group("write");
    g.sample_size(10);
    g.bench_function("rotate", |b| b.iter(|| rotate(&mut rng).unwrap()));
    // 64 callers each issue one standalone access token at once, so the writer commits them in
    // one or a few group commits: the time until all 64 are durable, and (printed) the bytes
    // the process wrote per token, on a database holding 100,000 tokens.
    engine::load_access(db, 0, 100_000, 4, false).unwrap();
    let grants: Vec<_> = (0..64).map(|i| engine::grant(i).unwrap()).collect();
    let mut written = (0u64, 0u64);
    g.bench_function("issue_x64", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let before = engine::bytes_written();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for gr in &grants {
                        s.spawn(move || black_box(db.issue_access(gr).unwrap()));
                    }
                });
                timed += start.elapsed();
                if let (Some(a), Some(b)) = (before, engine::bytes_written()) {
                    written.0 += b - a;
                    written.1 += 64;
                }
            }
            timed
        })
    });
    if let Some(per_token) = written.0.checked_div(written.1) {
        println!("write/issue_x64: {per_token} bytes written per issued token");
    }
    g.finish();
    drop(rotate);
    eng.close().unwrap();
}

fn sweep(c: &mut Criterion) {
    const BATCH: usize = 1_000;
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let mut eng =
        Engine::create(dir.path(), engine::LOAD_WRITER, DAY, engine::CACHE_BYTES).unwrap();
    let mut first = 0;
    let mut g = c.benchmark_group("sweep");
    g.sample_size(10);
    g.bench_function("batch_1000", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let db = eng.db().unwrap();
                engine::load_access(db, first, BATCH, 64, false).unwrap();
                first += BATCH;
                eng.clock().advance(DAY + Duration::from_secs(60));
                let start = Instant::now();
                let pass = db.sweep_now(None).unwrap();
                timed += start.elapsed();
                assert_eq!(pass.tokens, BATCH as u64);
            }
            timed
        })
    });
    g.finish();
    eng.close().unwrap();
}

criterion_group! {
    name = cpu;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = token, crypto, lookup
}
criterion_group! {
    name = durable;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = write, sweep
}
criterion_main!(cpu, durable);
