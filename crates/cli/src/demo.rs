//! `tokendb demo`: the token lifecycle, told on a real database file (or, with `--postgres`,
//! on a PostgreSQL database: the same story through the same API).

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokendb::{Config, Event, Grant, MasterKey, RotateRefusal, TokenDb, TokenStatus};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// Where the demo runs.
#[derive(Debug)]
pub(crate) enum Target<'a> {
    /// A database file.
    File(&'a Path),
    /// A PostgreSQL connection URL.
    Postgres(&'a str),
}

/// The demo key file of a PostgreSQL demo: in the working directory.
const POSTGRES_KEY_FILE: &str = "./tokendb-demo-postgres.key";

/// Loads the demo key file, or creates one (mode 0600) for a new database.
fn demo_master_key(kp: &Path, db: Option<&Path>) -> Result<MasterKey> {
    let kp = kp.to_path_buf();
    if kp.exists() {
        let text = std::fs::read_to_string(&kp)?;
        return Ok(MasterKey::from_text(&text)?);
    }
    if let Some(db) = db.filter(|db| db.exists()) {
        return Err(format!(
            "{} exists but its demo key file {} does not",
            db.display(),
            kp.display()
        )
        .into());
    }
    let key = MasterKey::generate();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&kp)?;
    writeln!(f, "{}", key.to_hex().as_str())?;
    f.sync_all()?;
    eprintln!(
        "warning: generated a master key in {} for this demo only — a real deployment keeps its master key in a KMS, never beside the database",
        kp.display()
    );
    Ok(key)
}

fn status(s: TokenStatus) -> String {
    match s {
        TokenStatus::Active => "active".into(),
        TokenStatus::Revoked(r) => format!("revoked ({})", r.name()),
        other => format!("{other:?}").to_lowercase(),
    }
}

pub(crate) fn run(target: &Target<'_>, tokens: u64) -> Result<()> {
    let db = match target {
        Target::File(path) => {
            let master = demo_master_key(&key_path(path), Some(path))?;
            let reopened = path.exists();
            let db = TokenDb::open_or_create(path, &master, Config::default())?;
            println!(
                "tokendb demo — database {} ({})",
                path.display(),
                if reopened { "reopened" } else { "created" }
            );
            db
        }
        Target::Postgres(url) => {
            let master = demo_master_key(Path::new(POSTGRES_KEY_FILE), None)?;
            let db = TokenDb::open_postgres(url, &master, Config::default())?;
            println!(
                "tokendb demo — PostgreSQL database {} (tables created if missing)",
                db.location()
            );
            db
        }
    };
    let events = db.subscribe();

    println!("\n1. Issue a refresh token and an access token");
    let grant = Grant::new("alice@example.com", "demo-client", "openid offline_access")?
        .with_claims(br#"{"amr":["pwd","otp"]}"#.to_vec());
    let refresh = db.issue_refresh(&grant)?;
    let access = db.issue_access_for_family(refresh.family, None)?;
    println!("   refresh token: {}", refresh.token.expose());
    println!("   access token:  {}", access.token.expose());
    println!(
        "   family {}; refresh expires in {} s (idle) / {} s (absolute)",
        refresh.family, refresh.idle.expires_in, refresh.absolute.expires_in
    );

    println!("\n2. Validate and introspect");
    let v = db.validate(access.token.expose())?;
    println!(
        "   validate(access):   {}, expires in {} s",
        status(v.status),
        v.expires.map_or(0, |e| e.expires_in)
    );
    let i = db.introspect(refresh.token.expose())?;
    println!(
        "   introspect(refresh): active={} sub={} client_id={} scope=\"{}\" token_type={} claims={}",
        i.is_active(),
        i.sub().unwrap_or("-"),
        i.client_id().unwrap_or("-"),
        i.scope().map(ToString::to_string).unwrap_or_default(),
        i.token_type().unwrap_or("-"),
        String::from_utf8_lossy(i.extra().unwrap_or_default()),
    );

    println!("\n3. Rotate the refresh token");
    let rotated = db.rotate(refresh.token.expose(), "demo-client", None)?;
    println!(
        "   new refresh token (generation {}): {}",
        rotated.generation,
        rotated.token.expose()
    );
    println!(
        "   absolute deadline unchanged: {}",
        rotated.absolute.at_ms == refresh.absolute.at_ms
    );

    println!("\n4. Present the old refresh token again (a stolen copy, say)");
    match db.rotate(refresh.token.expose(), "demo-client", None) {
        Err(tokendb::Error::Refused(RotateRefusal::ReuseDetected {
            family,
            presented,
            newest,
        })) => {
            println!(
                "   reuse detected: generation {presented} presented after generation {newest}; family {family} revoked"
            );
        }
        other => return Err(format!("expected reuse detection, got {other:?}").into()),
    }
    while let Ok(e) = events.try_recv() {
        if let Event::ReuseDetected {
            ms_since_rotation,
            tokens_revoked,
            ..
        } = e
        {
            println!(
                "   event: ReuseDetected ({ms_since_rotation} ms after rotation, {tokens_revoked} access token(s) revoked)"
            );
        }
    }
    println!(
        "   newest refresh token now: {}",
        status(db.validate(rotated.token.expose())?.status)
    );
    println!(
        "   access token now:         {}",
        status(db.validate(access.token.expose())?.status)
    );

    println!("\n5. Revoke (RFC 7009) a fresh login's refresh token");
    let second = db.issue_refresh(&grant)?;
    let second_access = db.issue_access_for_family(second.family, None)?;
    let r = db.revoke(second.token.expose())?;
    println!(
        "   revoked {} family, {} access token(s)",
        r.families, r.tokens
    );
    println!(
        "   refresh token: {}; access token: {}",
        status(db.validate(second.token.expose())?.status),
        status(db.validate(second_access.token.expose())?.status)
    );

    println!("\n6. Issue {tokens} access tokens, then validate them");
    let db = Arc::new(db);
    let started = Instant::now();
    let threads = 64u64;
    let per = tokens.div_ceil(threads);
    let issued: Vec<Vec<tokendb::TokenString>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let db = Arc::clone(&db);
                let grant = Grant::new(format!("user{t}@example.com"), "demo-client", "api:read")
                    .unwrap_or_else(|_| grant.clone());
                s.spawn(move || {
                    let n = per.min(tokens.saturating_sub(t * per));
                    (0..n)
                        .filter_map(|_| db.issue_access(&grant).ok().map(|a| a.token))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let all: Vec<&tokendb::TokenString> = issued.iter().flatten().collect();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "   issued {} in {:.2} s ({:.0}/s, durable, from {threads} threads)",
        all.len(),
        secs,
        all.len() as f64 / secs
    );
    let started = Instant::now();
    let mut active = 0u64;
    for t in &all {
        if db.validate(t.expose())?.is_active() {
            active += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "   validated {} ({} active) in {:.2} s: {:.0} validations/s on one thread",
        all.len(),
        active,
        secs,
        all.len() as f64 / secs
    );

    db.close()?;
    match target {
        Target::File(path) => println!(
            "\nDatabase left in place: {}",
            std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
        ),
        Target::Postgres(_) => println!(
            "\nTables left in place; the master key is in {POSTGRES_KEY_FILE} (demo only!)"
        ),
    }
    Ok(())
}
