//! A database damaged on purpose, looked up token by token (promise 5).
//!
//! [`Fixture::build`] makes a database with families (some rotated, some revoked, some past
//! their idle deadline, some swept), access tokens tied to them and standalone ones, and
//! records the answer of `validate` and `introspect` for every token ever handed out (old
//! generations included) plus a few forged ones. [`Fixture::check`] writes damaged bytes to a
//! file, opens it, and asks again. Each answer must be:
//!
//! * the same as before;
//! * or an error (the open refused, or the lookup failed);
//! * or inactive: the token not found, or refused for another reason.
//!
//! Anything else is a wrong answer: an active token whose status, deadlines, subject, client,
//! scope or claims differ from before, or a token reported active that was not.

use super::{Input, T0, ensure};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Grant, Introspection, ManualClock, MasterKey, SweeperConfig, TokenDb, TokenStatus,
    Validation,
};
use tokendb_core::{AccessToken, FamilyId, RefreshToken, TokenFormat, TokenSecret};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const MASTER: [u8; 32] = [0x3c; 32];

/// One token and its answers on the undamaged file.
#[derive(Debug)]
struct Probe {
    text: String,
    validation: Validation,
    introspection: Introspection,
}

/// Outcome counts, per case (a damaged file) and per lookup (a token on it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Damaged files tried.
    pub cases: u64,
    /// Cases refused at open.
    pub refused_at_open: u64,
    /// Cases that opened and answered every lookup as before.
    pub unaffected: u64,
    /// Cases that opened, with at least one lookup failing or no longer active, none wrong.
    pub degraded: u64,
    /// Lookups (validate + introspect of one token) answered as before.
    pub same: u64,
    /// Lookups that returned an error.
    pub errors: u64,
    /// Lookups that now answer "unknown" (not found).
    pub not_found: u64,
    /// Lookups still inactive, for another reason than before (revoked → expired, say).
    pub changed_inactive: u64,
    /// Lookups with a wrong answer. Must stay zero.
    pub wrong: u64,
}

impl Tally {
    /// Adds another tally.
    pub fn add(&mut self, o: &Self) {
        self.cases += o.cases;
        self.refused_at_open += o.refused_at_open;
        self.unaffected += o.unaffected;
        self.degraded += o.degraded;
        self.same += o.same;
        self.errors += o.errors;
        self.not_found += o.not_found;
        self.changed_inactive += o.changed_inactive;
        self.wrong += o.wrong;
    }
}

/// A database image and the answers it gives.
#[derive(Debug)]
pub struct Fixture {
    bytes: Vec<u8>,
    now: u64,
    probes: Vec<Probe>,
}

fn config(clock: &Arc<ManualClock>) -> Result<Config, String> {
    Config::builder()
        .clock(clock.clone())
        .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
        .refresh_lifetime(
            Duration::from_millis(8 * HOUR),
            Duration::from_millis(2 * HOUR),
        )
        .access_lifetime(Duration::from_millis(30 * MINUTE))
        .cache_size(1 << 20)
        // `TOKENDB_SWEEP_NO_INTEGRITY_CHECK=1` opens damaged files as tokendb did before the
        // check at open, to show what the check prevents (docs/security.md).
        .integrity_check_on_open(std::env::var_os("TOKENDB_SWEEP_NO_INTEGRITY_CHECK").is_none())
        .build()
        .map_err(|e| e.to_string())
}

const SCOPES: [&str; 3] = [
    "openid offline_access",
    "openid profile email",
    "api:read api:write",
];

fn err(what: &str) -> impl Fn(tokendb::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Fixture {
    /// Builds a database with `families` families in `dir` (its file is left there) and
    /// records every token's answers. About `2.3 × families` tokens are probed.
    ///
    /// # Errors
    /// If the database cannot be built, or the undamaged file does not answer as recorded.
    pub fn build(dir: &Path, families: usize) -> Result<Self, String> {
        let clock = Arc::new(ManualClock::new(T0));
        let path = dir.join("fixture.tdb");
        let master = MasterKey::from_bytes(MASTER);
        let db = TokenDb::create(&path, &master, config(&clock)?).map_err(err("create"))?;
        let mut texts: Vec<String> = Vec::new();
        // (index, first token, current token) of every family.
        let mut fams: Vec<(usize, String, String)> = Vec::new();
        let mut ids: Vec<FamilyId> = Vec::new();
        let client = |i: usize| format!("client-{}", i % 3);
        // Families are issued in three phases, 70 minutes apart; lifetimes are 8 h absolute,
        // 2 h idle, 30 min for access tokens. At the probe time (phase 3 + 10 min) phase 1's
        // families are past their idle deadline (unswept) unless rotated in phase 2, and
        // phase 1 and 2's access tokens were swept.
        for i in 0..families {
            if i == families / 3 {
                clock.set(T0 + 70 * MINUTE);
                // Phase 1's families with i % 5 == 0 are used again, and stay active.
                for (j, _, current) in fams.iter_mut().filter(|(j, _, _)| j % 5 == 0) {
                    let next = db
                        .rotate(current, &client(*j), None)
                        .map_err(err("rotate"))?;
                    *current = next.token.expose().to_owned();
                    texts.push(current.clone());
                }
            }
            if i == 2 * families / 3 {
                clock.set(T0 + 110 * MINUTE);
                db.sweep_now(None).map_err(err("sweep"))?;
                // Access tokens that expire before the probe time, never swept.
                for j in 0..families / 10 {
                    let g = Grant::new(format!("svc-{j}"), client(j), "api:read")
                        .map_err(err("grant"))?;
                    texts.push(
                        db.issue_access(&g)
                            .map_err(err("access"))?
                            .token
                            .expose()
                            .to_owned(),
                    );
                }
                clock.set(T0 + 140 * MINUTE);
            }
            let grant = Grant::new(
                format!("user-{i}@example.com"),
                client(i),
                SCOPES.get(i % 3).copied().unwrap_or("openid"),
            )
            .map_err(err("grant"))?
            .with_claims(format!("{{\"n\":{i},\"acr\":\"{}\"}}", i % 4).into_bytes());
            let rt = db.issue_refresh(&grant).map_err(err("issue_refresh"))?;
            ids.push(rt.family);
            let first = rt.token.expose().to_owned();
            let mut current = first.clone();
            texts.push(current.clone());
            if i % 2 == 0 {
                let at = db
                    .issue_access_for_family(rt.family, None)
                    .map_err(err("access"))?;
                texts.push(at.token.expose().to_owned());
            }
            for _ in 0..(i % 4) {
                let next = db
                    .rotate(&current, &client(i), None)
                    .map_err(err("rotate"))?;
                current = next.token.expose().to_owned();
                texts.push(current.clone());
            }
            fams.push((i, first, current));
            if i % 3 == 1 {
                let at = db.issue_access(&grant).map_err(err("standalone"))?;
                texts.push(at.token.expose().to_owned());
                if i % 9 == 4 {
                    db.revoke(at.token.expose()).map_err(err("revoke access"))?;
                }
            }
        }
        // Revocations of every kind, and reuse of an earlier generation.
        for (i, first, current) in &fams {
            if i % 7 == 3 {
                db.revoke(current).map_err(err("revoke"))?;
            } else if i % 8 == 7 && *i >= 2 * families / 3 {
                match db.rotate(first, &client(*i), None) {
                    Err(tokendb::Error::Refused(tokendb::RotateRefusal::ReuseDetected {
                        ..
                    })) => {}
                    other => return Err(format!("reuse was not detected: {other:?}")),
                }
            }
        }
        if let Some(id) = ids.get(5) {
            db.revoke_family(*id).map_err(err("revoke_family"))?;
        }
        db.revoke_subject("user-8@example.com", None)
            .map_err(err("revoke_subject"))?;
        let now = T0 + 150 * MINUTE;
        clock.set(now);
        // Forged tokens: a real family id with a bad tag, and a random access token.
        let format = TokenFormat::default();
        if let Some(id) = ids.first() {
            let forged = RefreshToken {
                family: *id,
                generation: 1,
                secret: TokenSecret::from_bytes([0xaa; 32]),
                tag: [0x55; 16],
            };
            texts.push(format.encode_refresh(&forged).expose().to_owned());
        }
        let stray = AccessToken {
            deadline: now + 3_600_000,
            secret: TokenSecret::from_bytes([0xbb; 32]),
        };
        texts.push(format.encode_access(&stray).expose().to_owned());
        db.close().map_err(err("close"))?;
        drop(db);
        let bytes = std::fs::read(&path).map_err(|e| format!("read fixture: {e}"))?;
        Self::from_parts(dir, bytes, texts, now)
    }

    /// A fixture from a database image, the tokens to probe and the time to probe them at:
    /// the answers are recorded from a fresh open of exactly these bytes (in `dir`).
    ///
    /// # Errors
    /// If the image does not open, or does not answer the same way twice.
    pub fn from_parts(
        dir: &Path,
        bytes: Vec<u8>,
        texts: Vec<String>,
        now: u64,
    ) -> Result<Self, String> {
        let probe_path = dir.join("probe.tdb");
        std::fs::write(&probe_path, &bytes).map_err(|e| format!("write: {e}"))?;
        let clock = Arc::new(ManualClock::new(now));
        let master = MasterKey::from_bytes(MASTER);
        let db = TokenDb::open(&probe_path, &master, config(&clock)?).map_err(err("open"))?;
        let mut probes = Vec::with_capacity(texts.len());
        for text in texts {
            let validation = db.validate(&text).map_err(err("validate"))?;
            let introspection = db.introspect(&text).map_err(err("introspect"))?;
            probes.push(Probe {
                text,
                validation,
                introspection,
            });
        }
        db.close().map_err(err("close"))?;
        drop(db);
        let fixture = Self { bytes, now, probes };
        let t = fixture.check(&probe_path, &fixture.bytes, true)?;
        ensure!(
            t.unaffected == 1 && t.same == fixture.probe_count(),
            "the undamaged file does not answer as recorded: {t:?}"
        );
        Ok(fixture)
    }

    /// Saves the image, the probed tokens and the probe time under `dir` (for [`Fixture::load`]
    /// in another process).
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let texts: Vec<&str> = self.probes.iter().map(|p| p.text.as_str()).collect();
        std::fs::write(dir.join("fixture.image"), &self.bytes)
            .and_then(|()| std::fs::write(dir.join("fixture.tokens"), texts.join("\n")))
            .and_then(|()| std::fs::write(dir.join("fixture.now"), self.now.to_string()))
            .map_err(|e| format!("save fixture: {e}"))
    }

    /// Loads what [`Fixture::save`] wrote to `dir`, recording the answers again on a copy in
    /// `work`.
    ///
    /// # Errors
    /// I/O errors, or as [`Fixture::from_parts`].
    pub fn load(dir: &Path, work: &Path) -> Result<Self, String> {
        let read =
            |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("load {name}: {e}"));
        let bytes = read("fixture.image")?;
        let texts = String::from_utf8_lossy(&read("fixture.tokens")?)
            .lines()
            .map(str::to_owned)
            .collect();
        let now = String::from_utf8_lossy(&read("fixture.now")?)
            .trim()
            .parse()
            .map_err(|e| format!("load fixture.now: {e}"))?;
        Self::from_parts(work, bytes, texts, now)
    }

    /// The undamaged file.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Tokens probed.
    #[must_use]
    pub fn probe_count(&self) -> u64 {
        self.probes.len() as u64
    }

    /// How many probes are active, and how many are in each inactive state, on the undamaged
    /// file: `(active, rotated, revoked, expired, unknown)`.
    #[must_use]
    pub fn census(&self) -> (usize, usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0, 0);
        for p in &self.probes {
            match p.validation.status {
                TokenStatus::Active => c.0 += 1,
                TokenStatus::Rotated => c.1 += 1,
                TokenStatus::Revoked(_) => c.2 += 1,
                TokenStatus::ExpiredAbsolute | TokenStatus::ExpiredIdle => c.3 += 1,
                _ => c.4 += 1,
            }
        }
        c
    }

    fn lookups(&self, db: &TokenDb, t: &mut Tally) -> Result<(), String> {
        let mut any_change = false;
        for p in &self.probes {
            let v = db.validate(&p.text);
            let i = db.introspect(&p.text);
            if let Ok(v) = &v {
                ensure!(
                    !v.is_active() || *v == p.validation,
                    "wrong answer: validate said {v:?}, before the damage {:?}",
                    p.validation
                );
            }
            if let Ok(i) = &i {
                ensure!(
                    !i.is_active() || *i == p.introspection,
                    "wrong answer: introspect said {i:?}, before the damage {:?}",
                    p.introspection
                );
            }
            match (v, i) {
                (Ok(v), Ok(i)) if v == p.validation && i == p.introspection => t.same += 1,
                (Ok(v), Ok(i))
                    if v.status == TokenStatus::Unknown && i.status == TokenStatus::Unknown =>
                {
                    t.not_found += 1;
                    any_change = true;
                }
                (Ok(_), Ok(_)) => {
                    t.changed_inactive += 1;
                    any_change = true;
                }
                _ => {
                    t.errors += 1;
                    any_change = true;
                }
            }
        }
        if any_change {
            t.degraded = 1;
        } else {
            t.unaffected = 1;
        }
        Ok(())
    }

    /// Writes `bytes` to `path`, opens it and looks every token up; with `writes`, then also
    /// sweeps and revokes on the damaged file (errors allowed) and looks everything up again.
    /// A panic inside tokendb propagates.
    ///
    /// # Errors
    /// A wrong answer, or a failure to write the file.
    pub fn check(&self, path: &Path, bytes: &[u8], writes: bool) -> Result<Tally, String> {
        // A new file (inode) each time, so nothing a previous case left open can touch it.
        let _ = std::fs::remove_file(path);
        std::fs::write(path, bytes).map_err(|e| format!("write {}: {e}", path.display()))?;
        let clock = Arc::new(ManualClock::new(self.now));
        let mut t = Tally {
            cases: 1,
            ..Tally::default()
        };
        let db = match TokenDb::open(path, &MasterKey::from_bytes(MASTER), config(&clock)?) {
            Ok(db) => db,
            Err(_) => {
                t.refused_at_open = 1;
                return Ok(t);
            }
        };
        self.lookups(&db, &mut t)?;
        if writes {
            let _ = db.sweep_now(None);
            if let Some(p) = self.probes.iter().find(|p| p.validation.is_active()) {
                let _ = db.revoke(&p.text);
            }
            // Answers may only move towards "inactive"; the counts above stand for the case.
            let mut again = Tally::default();
            self.lookups(&db, &mut again)?;
        }
        let _ = db.close();
        Ok(t)
    }

    /// `bytes` with bit `bit` of byte `offset` flipped.
    #[must_use]
    pub fn flip(&self, offset: usize, bit: u8) -> Vec<u8> {
        let mut b = self.bytes.clone();
        if let Some(x) = b.get_mut(offset) {
            *x ^= 1 << (bit % 8);
        }
        b
    }

    /// Damage chosen by fuzz input: up to 8 edits — a bit flipped, a byte overwritten, a run
    /// of bytes overwritten, a 4 KiB page zeroed, or the file truncated — and whether to also
    /// write to the damaged file. Returns the damaged bytes and that flag.
    #[must_use]
    pub fn mutate(&self, data: &[u8]) -> (Vec<u8>, bool) {
        let mut input = Input::new(data);
        let writes = input.byte() & 1 == 1;
        let mut b = self.bytes.clone();
        let mut edits = 0;
        while !input.is_empty() && edits < 8 {
            edits += 1;
            let kind = input.byte() % 5;
            let len = b.len().max(1);
            let offset = usize::try_from(input.u32()).unwrap_or(0) % len;
            let value = input.byte();
            match kind {
                0 => {
                    if let Some(x) = b.get_mut(offset) {
                        *x ^= 1 << (value % 8);
                    }
                }
                1 => {
                    if let Some(x) = b.get_mut(offset) {
                        *x = value;
                    }
                }
                2 => {
                    let end = offset
                        .saturating_add(usize::from(value % 64) + 1)
                        .min(b.len());
                    let fill = input.byte();
                    for x in b.get_mut(offset..end).unwrap_or_default() {
                        *x = fill;
                    }
                }
                3 => {
                    let page = offset & !4095;
                    let end = page.saturating_add(4096).min(b.len());
                    for x in b.get_mut(page..end).unwrap_or_default() {
                        *x = 0;
                    }
                }
                _ => b.truncate(offset),
            }
        }
        (b, writes)
    }
}
