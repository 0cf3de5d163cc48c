//! Random operation sequences against a reference model of design §5.
//!
//! [`run`] decodes fuzz input into at most [`MAX_OPS`] operations — issue (refresh, access tied
//! to a family, standalone access, a batch of 0-4 standalone access tokens with at most one bad
//! grant), validate, introspect, rotate or the whole refresh grant (the current token or any
//! earlier generation, by the right or the wrong client, with a narrower or wider scope), revoke (token, family, subject,
//! client), move the clock (forwards, and backwards), sweep, close and reopen, forge a token,
//! mangle one — and applies each to a real [`TokenDb`] on a file and to a plain in-memory model
//! written from the design's words, not from the engine's code. Every answer must equal the
//! model's, and so must the events each operation emits. After a reopen and at the end, every
//! token ever handed out is validated and introspected again.
//!
//! This is tokendb's one reference model of the lifecycle rules: the fuzzer (`fuzz_targets/
//! ops_model.rs`), its committed seeds (`tests/integration/fuzz_corpus.rs`) and the property
//! test (`tests/integration/model.rs`, random inputs on every `cargo test`) all drive it.
//!
//! The first input byte picks the configuration: grace period on or off, one-time-only or
//! non-rotating refresh tokens, and no family cap, evict-oldest or refuse at 2 per
//! (subject, client).

use super::{Input, T0, ensure};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokendb::{
    Config, Error, Event, EventReceiver, Expiry, FamilyCap, FamilyId, Grant, Introspection,
    ManualClock, MasterKey, RevokeReason, Revoked, RotateRefusal, Scope, SweeperConfig, TokenDb,
    TokenKind, TokenStatus, Validation,
};
use tokendb_core::{AccessToken, CoreError, RefreshToken, TokenFormat, TokenSecret};

/// Most operations one input runs.
pub const MAX_OPS: usize = 64;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const ABSOLUTE_MS: u64 = 8 * HOUR;
const IDLE_MS: u64 = 2 * HOUR;
const ACCESS_MS: u64 = 30 * MINUTE;
const GRACE_MS: u64 = 10_000;
const TOUCH_MS: u64 = MINUTE;
const CAP: u32 = 2;

const SUBJECTS: [&str; 3] = ["alice", "bob@example.com", "carol"];
const CLIENTS: [&str; 2] = ["web", "cli"];
const SCOPES: [&str; 3] = [
    "openid offline_access",
    "openid profile email",
    "api:read api:write",
];
/// Scopes asked for at rotation or access issue: narrower than some grants, wider than others.
const REQUESTS: [&str; 3] = ["openid", "api:read", "admin openid"];
/// Clock steps, chosen to land on both sides of every lifetime above.
const STEPS: [u64; 10] = [
    1,
    5_000,
    GRACE_MS + 1,
    MINUTE,
    ACCESS_MS - 1,
    ACCESS_MS + 1,
    HOUR,
    IDLE_MS,
    3 * HOUR,
    ABSOLUTE_MS + 1,
];

/// What [`run`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations applied.
    pub ops: usize,
    /// Answers compared with the model.
    pub checks: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    OneTimeOnly,
    NonRotating,
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    grace: bool,
    mode: Mode,
    cap: Option<FamilyCap>,
}

impl Settings {
    fn from_byte(b: u8) -> Self {
        Self {
            grace: b & 1 == 1,
            mode: if b & 2 == 2 {
                Mode::NonRotating
            } else {
                Mode::OneTimeOnly
            },
            cap: match (b >> 2) % 3 {
                0 => None,
                1 => Some(FamilyCap::EvictOldest(CAP)),
                _ => Some(FamilyCap::Refuse(CAP)),
            },
        }
    }

    fn config(&self, clock: &Arc<ManualClock>) -> Result<Config, String> {
        let mut b = Config::builder()
            .clock(clock.clone())
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .refresh_lifetime(
                Duration::from_millis(ABSOLUTE_MS),
                Duration::from_millis(IDLE_MS),
            )
            .access_lifetime(Duration::from_millis(ACCESS_MS))
            .family_cap(self.cap)
            .cache_size(4 << 20);
        if self.grace {
            b = b.grace_period(Duration::from_millis(GRACE_MS));
        }
        if self.mode == Mode::NonRotating {
            b = b.dangerous_non_rotating_refresh_tokens(Duration::from_millis(TOUCH_MS));
        }
        b.build().map_err(|e| e.to_string())
    }
}

/// A family as the model sees it.
#[derive(Debug)]
struct Family {
    id: FamilyId,
    subject: usize,
    client: usize,
    scope: Scope,
    claims: Vec<u8>,
    revoked: Option<RevokeReason>,
    created_at: u64,
    absolute: u64,
    idle: u64,
    generation: u64,
    rotated_at: u64,
    /// Text of the current refresh token.
    current: String,
    /// Text of the successor kept for grace replays, while it is kept.
    grace: Option<String>,
    /// Deleted by a sweep.
    deleted: bool,
}

impl Family {
    fn deadline(&self) -> u64 {
        self.absolute.min(self.idle)
    }

    fn status(&self, now: u64) -> TokenStatus {
        match self.revoked {
            Some(r) => TokenStatus::Revoked(r),
            None if now >= self.absolute => TokenStatus::ExpiredAbsolute,
            None if now >= self.idle => TokenStatus::ExpiredIdle,
            None => TokenStatus::Active,
        }
    }
}

/// One grant of a batch, as decoded: a grant of the single `issue_access` operation's space,
/// or one the design's limits refuse.
#[derive(Clone, Debug)]
enum BatchGrant {
    Valid {
        subject: usize,
        client: usize,
        scope: usize,
        claims: Vec<u8>,
    },
    /// A subject with a control character.
    BadSubject,
    /// An empty client id.
    EmptyClient,
}

/// The grant of a standalone access token: subject, client and scope by their index in the
/// model's fixed lists.
fn standalone_grant(
    subject: usize,
    client: usize,
    k: usize,
    claims: &[u8],
) -> Result<Grant, String> {
    Ok(Grant::with_scope(
        text(&SUBJECTS, subject),
        text(&CLIENTS, client),
        scope(&SCOPES, k)?,
    )
    .with_claims(claims.to_vec()))
}

/// An access token as the model sees it.
#[derive(Debug)]
struct Access {
    family: Option<usize>,
    subject: usize,
    client: usize,
    scope: Scope,
    claims: Vec<u8>,
    revoked: Option<RevokeReason>,
    issued_at: u64,
    deadline: u64,
    deleted: bool,
}

#[derive(Clone, Copy, Debug)]
enum What {
    Refresh {
        family: usize,
        generation: u64,
    },
    Access(usize),
    /// A well-formed token this database never issued.
    Forged(TokenKind),
}

#[derive(Debug)]
struct Token {
    text: String,
    what: What,
}

/// How a call failed, comparable with the model's prediction.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fail {
    Malformed,
    Refused(RotateRefusal),
    CapReached(u32),
    FamilyNotFound,
    InvalidInput(CoreError),
    BatchItem { index: usize, error: Box<Fail> },
    Other(String),
}

fn fail_of(e: &Error) -> Fail {
    match e {
        Error::Malformed(_) => Fail::Malformed,
        Error::Refused(r) => Fail::Refused(*r),
        Error::CapReached { limit } => Fail::CapReached(*limit),
        Error::FamilyNotFound => Fail::FamilyNotFound,
        Error::InvalidInput(e) => Fail::InvalidInput(e.clone()),
        Error::BatchItem { index, error } => Fail::BatchItem {
            index: *index,
            error: Box::new(fail_of(error)),
        },
        other => Fail::Other(format!("{other:?}")),
    }
}

fn expiry(at_ms: u64, now: u64) -> Expiry {
    Expiry::at(at_ms, now)
}

/// Every field of a [`Validation`], in a type of the model's own: tokendb's result types are
/// `#[non_exhaustive]`, so the model states what it expects in these and compares projections.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Val {
    kind: TokenKind,
    status: TokenStatus,
    expires: Option<Expiry>,
    absolute: Option<Expiry>,
    idle: Option<Expiry>,
    family: Option<FamilyId>,
}

impl Val {
    fn of(v: &Validation) -> Self {
        Self {
            kind: v.kind,
            status: v.status,
            expires: v.expires,
            absolute: v.absolute,
            idle: v.idle,
            family: v.family,
        }
    }

    fn is_active(&self) -> bool {
        self.status == TokenStatus::Active
    }
}

/// Every field of an [`Introspection`] (see [`Val`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Intro {
    status: TokenStatus,
    claims: Option<Claims>,
}

/// Every field of a [`tokendb::TokenClaims`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Claims {
    sub: String,
    client_id: String,
    scope: Scope,
    token_type: TokenKind,
    exp: u64,
    exp_ms: u64,
    iat: u64,
    iat_ms: u64,
    expires_in: u64,
    absolute: Expiry,
    idle: Option<Expiry>,
    extra: Vec<u8>,
    family: Option<FamilyId>,
}

impl Intro {
    fn of(i: &Introspection) -> Self {
        Self {
            status: i.status,
            claims: i.claims.as_ref().map(|c| Claims {
                sub: c.sub.clone(),
                client_id: c.client_id.clone(),
                scope: c.scope.clone(),
                token_type: c.token_type,
                exp: c.exp,
                exp_ms: c.exp_ms,
                iat: c.iat,
                iat_ms: c.iat_ms,
                expires_in: c.expires_in,
                absolute: c.absolute,
                idle: c.idle,
                extra: c.extra.clone(),
                family: c.family,
            }),
        }
    }
}

fn inactive(status: TokenStatus) -> Intro {
    Intro {
        status,
        claims: None,
    }
}

fn unknown(kind: TokenKind) -> Val {
    Val {
        kind,
        status: TokenStatus::Unknown,
        expires: None,
        absolute: None,
        idle: None,
        family: None,
    }
}

fn revoked(families: u64, tokens: u64) -> Revoked {
    let mut r = Revoked::default();
    r.families = families;
    r.tokens = tokens;
    r
}

fn text(list: &[&str], i: usize) -> String {
    list.get(i).copied().unwrap_or_default().to_owned()
}

fn scope(list: &[&str], i: usize) -> Result<Scope, String> {
    Scope::parse(list.get(i).copied().unwrap_or_default()).map_err(|e| e.to_string())
}

/// The model and the database under test, side by side.
struct Run {
    settings: Settings,
    config: Config,
    clock: Arc<ManualClock>,
    clock_ms: u64,
    /// The latest time the open handle has used: `TokenDb` never lets time run backwards
    /// within one handle, and starts afresh on reopen.
    last: u64,
    master: MasterKey,
    place: crate::place::Place,
    db: TokenDb,
    families: Vec<Family>,
    access: Vec<Access>,
    tokens: Vec<Token>,
    report: Report,
    step: usize,
    /// The open handle's event subscription.
    events: EventReceiver,
    /// The events the model expects of the current operation.
    expected: Vec<Event>,
}

impl Run {
    fn now(&mut self) -> u64 {
        self.last = self.last.max(self.clock_ms);
        self.last
    }

    fn fam(&self, i: usize) -> Result<&Family, String> {
        self.families
            .get(i)
            .ok_or_else(|| format!("model has no family {i}"))
    }

    fn fam_mut(&mut self, i: usize) -> Result<&mut Family, String> {
        self.families
            .get_mut(i)
            .ok_or_else(|| format!("model has no family {i}"))
    }

    fn acc(&self, i: usize) -> Result<&Access, String> {
        self.access
            .get(i)
            .ok_or_else(|| format!("model has no access token {i}"))
    }

    fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        got: &T,
        want: &T,
    ) -> Result<(), String> {
        self.report.checks += 1;
        ensure!(
            got == want,
            "step {}: {what}: tokendb answered {got:?}, the model says {want:?}",
            self.step
        );
        Ok(())
    }

    // ---- expected answers ----

    fn expect_validation(&self, t: &Token, now: u64) -> Result<Val, String> {
        match t.what {
            What::Forged(kind) => Ok(unknown(kind)),
            What::Access(i) => {
                let a = self.acc(i)?;
                if a.deleted {
                    return Ok(unknown(TokenKind::Access));
                }
                let status = match a.revoked {
                    Some(r) => TokenStatus::Revoked(r),
                    None if now >= a.deadline => TokenStatus::ExpiredAbsolute,
                    None => TokenStatus::Active,
                };
                let family = match a.family {
                    Some(f) => Some(self.fam(f)?.id),
                    None => None,
                };
                Ok(Val {
                    kind: TokenKind::Access,
                    status,
                    expires: Some(expiry(a.deadline, now)),
                    absolute: Some(expiry(a.deadline, now)),
                    idle: None,
                    family,
                })
            }
            What::Refresh { family, generation } => {
                let f = self.fam(family)?;
                let current = generation == f.generation;
                if f.deleted || generation > f.generation || (current && t.text != f.current) {
                    return Ok(unknown(TokenKind::Refresh));
                }
                let status = match f.status(now) {
                    TokenStatus::Active if !current => TokenStatus::Rotated,
                    s => s,
                };
                Ok(Val {
                    kind: TokenKind::Refresh,
                    status,
                    expires: Some(expiry(f.deadline(), now)),
                    absolute: Some(expiry(f.absolute, now)),
                    idle: Some(expiry(f.idle, now)),
                    family: Some(f.id),
                })
            }
        }
    }

    fn expect_introspection(&self, t: &Token, now: u64) -> Result<Intro, String> {
        let v = self.expect_validation(t, now)?;
        if !v.is_active() {
            return Ok(inactive(v.status));
        }
        let exp_ms = v.expires.map_or(0, |e| e.at_ms);
        let claims = |sub, client, scope: &Scope, token_type, iat_ms: u64, extra: &[u8]| Claims {
            sub: text(&SUBJECTS, sub),
            client_id: text(&CLIENTS, client),
            scope: scope.clone(),
            token_type,
            exp: exp_ms / 1000,
            exp_ms,
            iat: iat_ms / 1000,
            iat_ms,
            expires_in: exp_ms.saturating_sub(now) / 1000,
            absolute: v.absolute.unwrap_or(expiry(exp_ms, now)),
            idle: v.idle,
            extra: extra.to_vec(),
            family: v.family,
        };
        Ok(match t.what {
            What::Access(i) => {
                let a = self.acc(i)?;
                Intro {
                    status: TokenStatus::Active,
                    claims: Some(claims(
                        a.subject,
                        a.client,
                        &a.scope,
                        TokenKind::Access,
                        a.issued_at,
                        &a.claims,
                    )),
                }
            }
            What::Refresh { family, .. } => {
                let f = self.fam(family)?;
                Intro {
                    status: TokenStatus::Active,
                    claims: Some(claims(
                        f.subject,
                        f.client,
                        &f.scope,
                        TokenKind::Refresh,
                        f.rotated_at,
                        &f.claims,
                    )),
                }
            }
            What::Forged(_) => inactive(TokenStatus::Unknown),
        })
    }

    // ---- lookups ----

    fn validate(&mut self, i: usize) -> Result<(), String> {
        let Some(t) = self.tokens.get(i) else {
            return Ok(());
        };
        let got = self
            .db
            .validate(&t.text)
            .map(|v| Val::of(&v))
            .map_err(|e| fail_of(&e));
        let now = self.now();
        let t = self.tokens.get(i).ok_or("token vanished")?;
        let want = Ok(self.expect_validation(t, now)?);
        self.check("validate", &got, &want)
    }

    fn introspect(&mut self, i: usize) -> Result<(), String> {
        let Some(t) = self.tokens.get(i) else {
            return Ok(());
        };
        let got = self
            .db
            .introspect(&t.text)
            .map(|i| Intro::of(&i))
            .map_err(|e| fail_of(&e));
        let now = self.now();
        let t = self.tokens.get(i).ok_or("token vanished")?;
        let want = Ok(self.expect_introspection(t, now)?);
        self.check("introspect", &got, &want)
    }

    fn check_everything(&mut self) -> Result<(), String> {
        for i in 0..self.tokens.len() {
            self.validate(i)?;
            self.introspect(i)?;
        }
        Ok(())
    }

    // ---- issue ----

    fn issue_refresh(
        &mut self,
        subject: usize,
        client: usize,
        k: usize,
        claims: Vec<u8>,
    ) -> Result<(), String> {
        let grant_scope = scope(&SCOPES, k)?;
        let grant = Grant::with_scope(
            text(&SUBJECTS, subject),
            text(&CLIENTS, client),
            grant_scope.clone(),
        )
        .with_claims(claims.clone());
        let got = self.db.issue_refresh(&grant);
        let now = self.now();
        let absolute = now.saturating_add(ABSOLUTE_MS);
        let idle = now.saturating_add(IDLE_MS).min(absolute);
        let mut live: Vec<(u64, FamilyId, usize)> = self
            .families
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.subject == subject
                    && f.client == client
                    && !f.deleted
                    && f.revoked.is_none()
                    && now < f.deadline()
            })
            .map(|(i, f)| (f.created_at, f.id, i))
            .collect();
        live.sort();
        let limit = usize::try_from(CAP).unwrap_or(usize::MAX);
        let evict: Vec<usize> = match self.settings.cap {
            Some(FamilyCap::Refuse(_)) if live.len() >= limit => {
                let got = got.map(|r| r.family).map_err(|e| fail_of(&e));
                return self.check("issue_refresh", &got, &Err(Fail::CapReached(CAP)));
            }
            Some(FamilyCap::EvictOldest(_)) if live.len() >= limit => live
                .iter()
                .take(live.len() + 1 - limit)
                .map(|(_, _, i)| *i)
                .collect(),
            _ => Vec::new(),
        };
        let issued = match got {
            Ok(r) => r,
            Err(e) => {
                return self.check("issue_refresh", &Err(fail_of(&e)), &Ok(()));
            }
        };
        let mut evicted_ids = Vec::new();
        for i in evict {
            evicted_ids.push(self.fam(i)?.id);
            self.revoke_family_model(i, RevokeReason::Evicted)?;
        }
        self.check("issue_refresh evicted", &issued.evicted, &evicted_ids)?;
        self.check(
            "issue_refresh deadlines",
            &(issued.absolute, issued.idle),
            &(expiry(absolute, now), expiry(idle, now)),
        )?;
        ensure!(
            self.families.iter().all(|f| f.id != issued.family),
            "issue_refresh reused a family id"
        );
        let text = issued.token.expose().to_owned();
        self.families.push(Family {
            id: issued.family,
            subject,
            client,
            scope: grant_scope,
            claims,
            revoked: None,
            created_at: now,
            absolute,
            idle,
            generation: 1,
            rotated_at: now,
            current: text.clone(),
            grace: None,
            deleted: false,
        });
        self.tokens.push(Token {
            text,
            what: What::Refresh {
                family: self.families.len() - 1,
                generation: 1,
            },
        });
        Ok(())
    }

    fn issue_access_for_family(&mut self, fi: usize, req: Option<usize>) -> Result<(), String> {
        if fi >= self.families.len() {
            return Ok(());
        }
        let requested = match req {
            Some(k) => Some(scope(&REQUESTS, k)?),
            None => None,
        };
        let id = self.fam(fi)?.id;
        let got = self.db.issue_access_for_family(id, requested.as_ref());
        let now = self.now();
        let f = self.fam(fi)?;
        let want: Result<(u64, Scope), Fail> = if f.deleted {
            Err(Fail::FamilyNotFound)
        } else if requested
            .as_ref()
            .is_some_and(|s| !s.is_subset_of(&f.scope))
        {
            Err(Fail::Refused(RotateRefusal::ScopeWidened))
        } else {
            match f.status(now) {
                TokenStatus::Revoked(r) => Err(Fail::Refused(RotateRefusal::Revoked(r))),
                TokenStatus::ExpiredAbsolute => Err(Fail::Refused(RotateRefusal::ExpiredAbsolute)),
                TokenStatus::ExpiredIdle => Err(Fail::Refused(RotateRefusal::ExpiredIdle)),
                // Capped at the family's deadline now (the earlier of absolute and idle):
                // an access token never outlives its family.
                _ => Ok((
                    now.saturating_add(ACCESS_MS).min(f.deadline()),
                    requested.clone().unwrap_or_else(|| f.scope.clone()),
                )),
            }
        };
        let (subject, client, claims) = (f.subject, f.client, f.claims.clone());
        match (got, want) {
            (Ok(issued), Ok((deadline, scope))) => {
                self.check(
                    "issue_access_for_family",
                    &(issued.expires, &issued.scope),
                    &(expiry(deadline, now), &scope),
                )?;
                self.remember_family_access(
                    fi,
                    (subject, client, scope, claims),
                    issued.token.expose(),
                    now,
                    deadline,
                );
                Ok(())
            }
            (got, want) => {
                let got = got.map(|i| i.expires.at_ms).map_err(|e| fail_of(&e));
                let want = want.map(|(d, _)| d);
                self.check("issue_access_for_family", &got, &want)
            }
        }
    }

    fn issue_access(
        &mut self,
        subject: usize,
        client: usize,
        k: usize,
        claims: Vec<u8>,
    ) -> Result<(), String> {
        let grant = standalone_grant(subject, client, k, &claims)?;
        let got = self.db.issue_access(&grant).map_err(|e| fail_of(&e));
        let now = self.now();
        let deadline = now.saturating_add(ACCESS_MS);
        let issued = match got {
            Ok(i) => i,
            Err(e) => return self.check("issue_access", &Err(e), &Ok(())),
        };
        self.check(
            "issue_access",
            &(issued.expires, &issued.scope),
            &(expiry(deadline, now), &grant.scope),
        )?;
        self.remember_standalone(
            issued.token.expose().to_owned(),
            (subject, client, grant.scope, claims),
            now,
            deadline,
        );
        Ok(())
    }

    /// Records a standalone access token the database issued for grant `(subject, client,
    /// scope, claims)` at `now`.
    fn remember_standalone(
        &mut self,
        text: String,
        (subject, client, scope, claims): (usize, usize, Scope, Vec<u8>),
        now: u64,
        deadline: u64,
    ) {
        self.access.push(Access {
            family: None,
            subject,
            client,
            scope,
            claims,
            revoked: None,
            issued_at: now,
            deadline,
            deleted: false,
        });
        self.tokens.push(Token {
            text,
            what: What::Access(self.access.len() - 1),
        });
    }

    /// A batch of standalone access tokens: all or nothing. On success each grant is issued
    /// exactly as `issue_access` would issue it alone, all at one instant; a bad grant refuses
    /// the whole batch with its index, and nothing changes.
    fn issue_access_batch(&mut self, batch: Vec<BatchGrant>) -> Result<(), String> {
        let mut grants = Vec::with_capacity(batch.len());
        for g in &batch {
            grants.push(match g {
                BatchGrant::Valid {
                    subject,
                    client,
                    scope: k,
                    claims,
                } => standalone_grant(*subject, *client, *k, claims)?,
                BatchGrant::BadSubject => {
                    Grant::with_scope("eve\u{7}".to_owned(), text(&CLIENTS, 0), scope(&SCOPES, 0)?)
                        .with_claims(Vec::new())
                }
                BatchGrant::EmptyClient => {
                    Grant::with_scope(text(&SUBJECTS, 0), String::new(), scope(&SCOPES, 0)?)
                        .with_claims(Vec::new())
                }
            });
        }
        let got = self.db.issue_access_batch(&grants).map_err(|e| fail_of(&e));
        if batch.is_empty() {
            // Answered before the clock is read: nothing issued, nothing written.
            let got = got.map(|v| v.len());
            return self.check("issue_access_batch (empty)", &got, &Ok(0));
        }
        let now = self.now();
        let bad = batch.iter().enumerate().find_map(|(index, g)| match g {
            BatchGrant::Valid { .. } => None,
            BatchGrant::BadSubject => Some((index, CoreError::BadText("subject"))),
            BatchGrant::EmptyClient => Some((index, CoreError::BadText("client id"))),
        });
        if let Some((index, error)) = bad {
            let got = got.map(|v| v.len());
            let want = Err(Fail::BatchItem {
                index,
                error: Box::new(Fail::InvalidInput(error)),
            });
            return self.check("issue_access_batch (refused)", &got, &want);
        }
        let issued = match got {
            Ok(v) => v,
            Err(e) => return self.check("issue_access_batch", &Err(e), &Ok(())),
        };
        let deadline = now.saturating_add(ACCESS_MS);
        let got: Vec<(Expiry, &Scope)> = issued.iter().map(|i| (i.expires, &i.scope)).collect();
        let want: Vec<(Expiry, &Scope)> = grants
            .iter()
            .map(|g| (expiry(deadline, now), &g.scope))
            .collect();
        self.check("issue_access_batch", &got, &want)?;
        for (g, i) in batch.into_iter().zip(issued) {
            let BatchGrant::Valid {
                subject,
                client,
                scope: k,
                claims,
            } = g
            else {
                return Err(format!(
                    "step {}: issue_access_batch: a refused grant was issued",
                    self.step
                ));
            };
            let text = i.token.expose().to_owned();
            ensure!(
                self.tokens.iter().all(|t| t.text != text),
                "step {}: issue_access_batch returned a token already handed out",
                self.step
            );
            self.remember_standalone(
                text,
                (subject, client, scope(&SCOPES, k)?, claims),
                now,
                deadline,
            );
        }
        Ok(())
    }

    // ---- rotation ----

    /// A presentation for rotation; with `refresh`, the whole refresh grant
    /// ([`TokenDb::refresh`]): the same answers, plus an access token whenever a refresh token
    /// is handed out.
    fn rotate(
        &mut self,
        ti: usize,
        other_client: bool,
        req: Option<usize>,
        refresh: bool,
    ) -> Result<(), String> {
        let Some(t) = self.tokens.get(ti) else {
            return Ok(());
        };
        let (presented, what) = (t.text.clone(), t.what);
        let requested = match req {
            Some(k) => Some(scope(&REQUESTS, k)?),
            None => None,
        };
        let own_client = match what {
            What::Refresh { family, .. } => self.fam(family)?.client,
            What::Access(i) => self.acc(i)?.client,
            What::Forged(_) => 0,
        };
        let client = if other_client {
            1 - own_client
        } else {
            own_client
        };
        let client_id = text(&CLIENTS, client);
        let got = if refresh {
            self.db
                .refresh(&presented, &client_id, requested.as_ref())
                .map(|r| (r.refresh, Some(r.access)))
        } else {
            self.db
                .rotate(&presented, &client_id, requested.as_ref())
                .map(|r| (r, None))
        };
        let got = got.map_err(|e| fail_of(&e));
        let (family, generation) = match what {
            // An access token is refused as unknown before the clock is read.
            What::Access(_) | What::Forged(TokenKind::Access) => {
                let got = got.map(|(r, _)| r.generation);
                return self.check("rotate", &got, &Err(Fail::Refused(RotateRefusal::Unknown)));
            }
            What::Forged(TokenKind::Refresh) => {
                self.now();
                let got = got.map(|(r, _)| r.generation);
                return self.check("rotate", &got, &Err(Fail::Refused(RotateRefusal::Unknown)));
            }
            What::Refresh { family, generation } => (family, generation),
        };
        let now = self.now();
        let refuse = |r: RotateRefusal| Err::<(), Fail>(Fail::Refused(r));
        let f = self.fam(family)?;
        let scope_ok = requested.as_ref().is_none_or(|s| s.is_subset_of(&f.scope));
        let refusal = if f.deleted || generation > f.generation {
            Some(RotateRefusal::Unknown)
        } else {
            match f.status(now) {
                TokenStatus::Revoked(r) => Some(RotateRefusal::Revoked(r)),
                TokenStatus::ExpiredAbsolute => Some(RotateRefusal::ExpiredAbsolute),
                TokenStatus::ExpiredIdle => Some(RotateRefusal::ExpiredIdle),
                _ if other_client => Some(RotateRefusal::ClientMismatch),
                _ if generation == f.generation && presented != f.current => {
                    Some(RotateRefusal::Unknown)
                }
                _ => None,
            }
        };
        if let Some(r) = refusal {
            if r == RotateRefusal::ClientMismatch {
                self.expected.push(Event::ClientMismatch { family: f.id });
            }
            let got = got.map(|_| ());
            return self.check("rotate", &got, &refuse(r));
        }
        let in_grace = self.settings.grace
            && generation.saturating_add(1) == f.generation
            && f.grace.is_some()
            && now < f.rotated_at.saturating_add(GRACE_MS);
        if generation == f.generation || in_grace {
            if !scope_ok {
                let got = got.map(|_| ());
                return self.check("rotate", &got, &refuse(RotateRefusal::ScopeWidened));
            }
        } else {
            // An earlier generation outside the grace window: reuse.
            let want = RotateRefusal::ReuseDetected {
                family: f.id,
                presented: generation,
                newest: f.generation,
            };
            let (id, newest, since) = (f.id, f.generation, now.saturating_sub(f.rotated_at));
            let revoked = self.revoke_family_model(family, RevokeReason::ReuseDetected)?;
            self.expected.push(Event::ReuseDetected {
                family: id,
                presented_generation: generation,
                newest_generation: newest,
                ms_since_rotation: since,
                tokens_revoked: revoked.tokens,
            });
            let got = got.map(|_| ());
            return self.check("rotate", &got, &refuse(want));
        }
        let (r, access) = match got {
            Ok(r) => r,
            Err(e) => return self.check("rotate", &Err(e), &Ok(())),
        };
        ensure!(
            access.is_some() == refresh,
            "step {}: an access token came back from a plain rotation, or none from a refresh",
            self.step
        );
        let summary = |r: &tokendb::Rotated| {
            (
                r.family,
                r.generation,
                r.absolute,
                r.idle,
                r.scope.clone(),
                r.replayed,
            )
        };
        if in_grace {
            let f = self.fam(family)?;
            let want = (
                f.id,
                f.generation,
                expiry(f.absolute, now),
                expiry(f.idle, now),
                requested.clone(),
                true,
            );
            let kept = f.grace.clone();
            self.check("rotate (grace replay)", &summary(&r), &want)?;
            self.check(
                "rotate (grace replay) token",
                &Some(r.token.expose().to_owned()),
                &kept,
            )?;
            return self.check_refresh_access(family, access, requested, now);
        }
        let (grace, mode) = (self.settings.grace, self.settings.mode);
        let f = self.fam_mut(family)?;
        let idle = now.saturating_add(IDLE_MS).min(f.absolute);
        match mode {
            Mode::OneTimeOnly => {
                f.generation += 1;
                f.idle = idle;
                f.rotated_at = now;
                f.current = r.token.expose().to_owned();
                f.grace = grace.then(|| f.current.clone());
            }
            Mode::NonRotating => {
                if idle.saturating_sub(f.idle) >= TOUCH_MS {
                    f.idle = idle;
                }
            }
        }
        let want = (
            f.id,
            f.generation,
            expiry(f.absolute, now),
            expiry(f.idle, now),
            requested,
            false,
        );
        let (new_generation, current) = (f.generation, f.current.clone());
        self.check("rotate", &summary(&r), &want)?;
        self.check_refresh_access(family, access, want.4.clone(), now)?;
        match self.settings.mode {
            Mode::OneTimeOnly => {
                ensure!(
                    r.token.expose() != presented,
                    "rotation returned the presented token"
                );
                self.tokens.push(Token {
                    text: current,
                    what: What::Refresh {
                        family,
                        generation: new_generation,
                    },
                });
                Ok(())
            }
            Mode::NonRotating => self.check(
                "rotate (non-rotating) token",
                &r.token.expose().to_owned(),
                &presented,
            ),
        }
    }

    /// The access token a refresh issued must be the family's, for the scope asked (or the
    /// grant), capped at the family's deadline as the operation left it; the model then knows
    /// it like any other access token. `access` is `None` exactly for a plain rotation.
    fn check_refresh_access(
        &mut self,
        family: usize,
        access: Option<tokendb::IssuedAccess>,
        requested: Option<Scope>,
        now: u64,
    ) -> Result<(), String> {
        let Some(issued) = access else {
            return Ok(());
        };
        let f = self.fam(family)?;
        let deadline = now.saturating_add(ACCESS_MS).min(f.deadline());
        let scope = requested.unwrap_or_else(|| f.scope.clone());
        let (subject, client, claims) = (f.subject, f.client, f.claims.clone());
        self.check(
            "refresh (access token)",
            &(issued.expires, &issued.scope),
            &(expiry(deadline, now), &scope),
        )?;
        self.remember_family_access(
            family,
            (subject, client, scope, claims),
            issued.token.expose(),
            now,
            deadline,
        );
        Ok(())
    }

    /// Records an access token tied to family `family`, issued at `now` for `(subject, client,
    /// scope, claims)`, and its text.
    fn remember_family_access(
        &mut self,
        family: usize,
        (subject, client, scope, claims): (usize, usize, Scope, Vec<u8>),
        text: &str,
        now: u64,
        deadline: u64,
    ) {
        self.access.push(Access {
            family: Some(family),
            subject,
            client,
            scope,
            claims,
            revoked: None,
            issued_at: now,
            deadline,
            deleted: false,
        });
        self.tokens.push(Token {
            text: text.to_owned(),
            what: What::Access(self.access.len() - 1),
        });
    }

    // ---- revocation ----

    /// Revokes family `i` in the model, with its live access tokens.
    fn revoke_family_model(&mut self, i: usize, reason: RevokeReason) -> Result<Revoked, String> {
        let f = self.fam_mut(i)?;
        if f.deleted {
            return Ok(Revoked::default());
        }
        let mut out = Revoked::default();
        if f.revoked.is_none() {
            f.revoked = Some(reason);
            f.grace = None;
            out.families = 1;
            let family = f.id;
            self.expected.push(Event::FamilyRevoked { family, reason });
        }
        for a in &mut self.access {
            if a.family == Some(i) && !a.deleted && a.revoked.is_none() {
                a.revoked = Some(RevokeReason::Family);
                out.tokens += 1;
            }
        }
        Ok(out)
    }

    fn revoke_access_model(&mut self, i: usize, reason: RevokeReason) -> Result<Revoked, String> {
        let a = self
            .access
            .get_mut(i)
            .ok_or_else(|| format!("model has no access token {i}"))?;
        if a.deleted || a.revoked.is_some() {
            return Ok(Revoked::default());
        }
        a.revoked = Some(reason);
        Ok(revoked(0, 1))
    }

    fn revoke(&mut self, ti: usize) -> Result<(), String> {
        let Some(t) = self.tokens.get(ti) else {
            return Ok(());
        };
        let (presented, what) = (t.text.clone(), t.what);
        let got = self.db.revoke(&presented).map_err(|e| fail_of(&e));
        self.now();
        let want = match what {
            What::Forged(_) => Revoked::default(),
            What::Access(i) => self.revoke_access_model(i, RevokeReason::Requested)?,
            What::Refresh { family, generation } => {
                let f = self.fam(family)?;
                if f.deleted || (generation == f.generation && presented != f.current) {
                    Revoked::default()
                } else {
                    self.revoke_family_model(family, RevokeReason::Requested)?
                }
            }
        };
        self.check("revoke", &got, &Ok(want))
    }

    fn revoke_family(&mut self, fi: usize) -> Result<(), String> {
        if fi >= self.families.len() {
            return Ok(());
        }
        let got = self
            .db
            .revoke_family(self.fam(fi)?.id)
            .map_err(|e| fail_of(&e));
        self.now();
        let want = self.revoke_family_model(fi, RevokeReason::Requested)?;
        self.check("revoke_family", &got, &Ok(want))
    }

    fn revoke_indexed(
        &mut self,
        subject: Option<usize>,
        client: Option<usize>,
    ) -> Result<(), String> {
        let got = match subject {
            Some(s) => self.db.revoke_subject(
                &text(&SUBJECTS, s),
                client.map(|c| text(&CLIENTS, c)).as_deref(),
            ),
            None => self.db.revoke_client(&text(&CLIENTS, client.unwrap_or(0))),
        }
        .map_err(|e| fail_of(&e));
        self.now();
        let reason = if subject.is_some() {
            RevokeReason::Subject
        } else {
            RevokeReason::Client
        };
        let matches =
            |s: usize, c: usize| subject.is_none_or(|x| x == s) && client.is_none_or(|x| x == c);
        let mut want = Revoked::default();
        for i in 0..self.families.len() {
            let f = self.fam(i)?;
            if !f.deleted && matches(f.subject, f.client) {
                let r = self.revoke_family_model(i, reason)?;
                want.families += r.families;
                want.tokens += r.tokens;
            }
        }
        for i in 0..self.access.len() {
            let a = self.acc(i)?;
            if a.family.is_none() && matches(a.subject, a.client) {
                want.tokens += self.revoke_access_model(i, reason)?.tokens;
            }
        }
        self.check("revoke_subject/client", &got, &Ok(want))
    }

    // ---- time, sweeping, reopening ----

    fn sweep(&mut self) -> Result<(), String> {
        let got = self
            .db
            .sweep_now(None)
            .map(|r| (r.families, r.tokens))
            .map_err(|e| fail_of(&e));
        let now = self.now();
        let (mut families, mut tokens) = (0u64, 0u64);
        for (i, f) in self.families.iter_mut().enumerate() {
            if f.deleted {
                continue;
            }
            if f.deadline() <= now {
                f.deleted = true;
                families += 1;
                for a in &mut self.access {
                    if a.family == Some(i) && !a.deleted {
                        a.deleted = true;
                        tokens += 1;
                    }
                }
            } else if f.grace.is_some() && f.rotated_at.saturating_add(GRACE_MS) <= now {
                f.grace = None;
            }
        }
        for a in &mut self.access {
            if !a.deleted && a.deadline <= now {
                a.deleted = true;
                tokens += 1;
            }
        }
        if families + tokens > 0 {
            self.expected.push(Event::Expired { families, tokens });
        }
        self.check("sweep (families, tokens)", &got, &Ok((families, tokens)))
    }

    /// The events of the operation just applied must be the model's, as a multiset (their order
    /// within one operation is not a promise: a revocation by subject names its families in
    /// index order).
    fn check_events(&mut self) -> Result<(), String> {
        let key = |e: &Event| format!("{e:?}");
        let mut got: Vec<Event> = self.events.try_iter().collect();
        let mut want = std::mem::take(&mut self.expected);
        got.sort_by_key(key);
        want.sort_by_key(key);
        self.check("events", &got, &want)
    }

    fn reopen(&mut self) -> Result<(), String> {
        self.db.close().map_err(|e| format!("close: {e}"))?;
        self.db = self
            .place
            .open(&self.master, self.config.clone())
            .map_err(|e| format!("reopen: {e}"))?;
        self.events = self.db.subscribe();
        self.last = 0;
        self.check_everything()
    }

    fn set_clock(&mut self, ms: u64) {
        self.clock_ms = ms;
        self.clock.set(ms);
    }

    // ---- hostile input ----

    fn forge(&mut self, input: &mut Input<'_>) {
        let format = TokenFormat::default();
        let secret = TokenSecret::from_bytes(input.array());
        let (text, kind) = if input.byte() & 1 == 0 && !self.families.is_empty() {
            let family = self
                .families
                .get(input.pick(self.families.len()))
                .map_or(FamilyId::from_bytes([0; 16]), |f| f.id);
            let t = RefreshToken {
                family,
                generation: u64::from(input.byte() % 4),
                secret,
                tag: input.array(),
            };
            (format.encode_refresh(&t), TokenKind::Refresh)
        } else {
            (
                format.encode_access(&AccessToken {
                    deadline: self
                        .clock_ms
                        .saturating_add(u64::from(input.byte()) * 60_000),
                    secret,
                }),
                TokenKind::Access,
            )
        };
        self.tokens.push(Token {
            text: text.expose().to_owned(),
            what: What::Forged(kind),
        });
    }

    /// A real token, truncated or with one character changed: refused as malformed by every
    /// entry point, before the clock or the file is read.
    fn mangle(&mut self, input: &mut Input<'_>) -> Result<(), String> {
        let Some(t) = self.tokens.get(input.pick(self.tokens.len())) else {
            return Ok(());
        };
        let chars: Vec<char> = t.text.chars().collect();
        let pos = usize::from(input.byte()) % chars.len().max(1);
        let c = char::from(input.byte());
        let bad: String = if input.byte() & 1 == 0 {
            chars.iter().take(pos).collect()
        } else {
            chars
                .iter()
                .enumerate()
                .map(|(i, old)| if i == pos { c } else { *old })
                .collect()
        };
        if bad == t.text {
            return Ok(());
        }
        let got = (
            self.db.validate(&bad).map(|_| ()).map_err(|e| fail_of(&e)),
            self.db
                .introspect(&bad)
                .map(|_| ())
                .map_err(|e| fail_of(&e)),
            self.db
                .rotate(&bad, "web", None)
                .map(|_| ())
                .map_err(|e| fail_of(&e)),
            self.db.revoke(&bad).map(|_| ()).map_err(|e| fail_of(&e)),
        );
        let m = Err(Fail::Malformed);
        self.check("mangled token", &got, &(m.clone(), m.clone(), m.clone(), m))
    }
}

/// Decodes `data` into operations and runs them against a fresh database in `dir` and the
/// model.
///
/// # Errors
/// The first answer that differs from the model's, or a failure to set up.
pub fn run(dir: &Path, data: &[u8]) -> Result<Report, String> {
    run_on(&crate::place::Place::File(dir.join("model.tdb")), data)
}

/// As [`run`], on a database created at `place` (a file, or a fresh PostgreSQL schema).
///
/// # Errors
/// As [`run`].
pub fn run_on(place: &crate::place::Place, data: &[u8]) -> Result<Report, String> {
    let mut input = Input::new(data);
    let settings = Settings::from_byte(input.byte());
    let clock = Arc::new(ManualClock::new(T0));
    let config = settings.config(&clock)?;
    let master = MasterKey::from_bytes([0x5a; 32]);
    let db = place
        .create(&master, config.clone())
        .map_err(|e| format!("create: {e}"))?;
    let events = db.subscribe();
    let mut run = Run {
        settings,
        config,
        clock,
        clock_ms: T0,
        last: 0,
        master,
        place: place.clone(),
        db,
        families: Vec::new(),
        access: Vec::new(),
        tokens: Vec::new(),
        report: Report::default(),
        step: 0,
        events,
        expected: Vec::new(),
    };
    while !input.is_empty() && run.step < MAX_OPS {
        run.step += 1;
        let b = input.byte();
        match b % 16 {
            // Taken from issue_refresh's second value, high half only, so the committed seeds
            // decode as before.
            1 if b >= 0x80 => {
                let n = usize::from(input.byte() % 5);
                let bad = input.byte();
                let mut batch = Vec::with_capacity(n);
                for i in 0..n {
                    let (s, c, k) = (input.pick(3), input.pick(2), input.pick(3));
                    let len = usize::from(input.byte() % 24);
                    let claims = input.bytes(len).to_vec();
                    batch.push(if usize::from(bad % 8) != i {
                        BatchGrant::Valid {
                            subject: s,
                            client: c,
                            scope: k,
                            claims,
                        }
                    } else if bad & 8 == 0 {
                        BatchGrant::BadSubject
                    } else {
                        BatchGrant::EmptyClient
                    });
                }
                run.issue_access_batch(batch)?;
            }
            0 | 1 => {
                let (s, c, k) = (input.pick(3), input.pick(2), input.pick(3));
                let n = usize::from(input.byte() % 24);
                let claims = input.bytes(n).to_vec();
                run.issue_refresh(s, c, k, claims)?;
            }
            2 => {
                let fi = input.pick(run.families.len());
                let b = input.byte();
                let req = (!b.is_multiple_of(4)).then(|| usize::from(b % 4) - 1);
                run.issue_access_for_family(fi, req)?;
            }
            3 => {
                let (s, c, k) = (input.pick(3), input.pick(2), input.pick(3));
                let n = usize::from(input.byte() % 24);
                let claims = input.bytes(n).to_vec();
                run.issue_access(s, c, k, claims)?;
            }
            4 => run.validate(input.pick(run.tokens.len()))?,
            5 => run.introspect(input.pick(run.tokens.len()))?,
            6 | 7 => {
                let ti = input.pick(run.tokens.len());
                let b = input.byte();
                let req = (b % 8 >= 5).then(|| usize::from(b % 8) - 5);
                // Bit 6: the whole refresh grant (rotation and access token in one write).
                run.rotate(ti, b & 0x80 != 0, req, b & 0x40 != 0)?;
            }
            8 => run.revoke(input.pick(run.tokens.len()))?,
            9 => run.revoke_family(input.pick(run.families.len()))?,
            10 => {
                let b = input.byte();
                let client = (b & 2 == 2).then(|| usize::from(b >> 2) % 2);
                if b & 1 == 0 {
                    run.revoke_indexed(Some(usize::from(b >> 3) % 3), client)?;
                } else {
                    run.revoke_indexed(None, Some(client.unwrap_or(0)))?;
                }
            }
            11 => {
                let step = STEPS.get(input.pick(STEPS.len())).copied().unwrap_or(1);
                run.set_clock(run.clock_ms.saturating_add(step));
            }
            12 => {
                // The clock steps back (NTP, a VM restore): answers stay sensible, and no
                // deadline is extended; within one handle time never runs backwards.
                let step = STEPS.get(input.pick(STEPS.len())).copied().unwrap_or(1);
                run.set_clock(run.clock_ms.saturating_sub(step).max(T0));
            }
            13 => run.sweep()?,
            14 => {
                if input.byte() & 1 == 0 {
                    run.reopen()?;
                } else {
                    run.forge(&mut input);
                }
            }
            _ => run.mangle(&mut input)?,
        }
        run.check_events()?;
        run.report.ops += 1;
    }
    run.check_everything()?;
    run.db.close().map_err(|e| format!("close: {e}"))?;
    Ok(run.report)
}
