//! [`TokenDb`]: the store, the sweeper, the token format and the clock, together.

use crate::config::Config;
use crate::error::{Error, Result, RotateRefusal};
use crate::events::EventBus;
use crate::types::{
    Event, Expiry, Grant, Introspection, IssuedAccess, IssuedRefresh, Revoked, Rotated,
    TokenStatus, Validation,
};
use crossbeam_channel::Receiver;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokendb_core::{
    AccessKey, AccessRecord, AccessStatus, AccessToken, FamilyId, FamilyRecord, KeyRing, MasterKey,
    ParsedToken, RecordBody, RecordState, RefreshToken, RevokeReason, Scope, TokenKind,
    TokenSecret,
};
use tokendb_rotation::{Refusal, Status, family_status};
use tokendb_store::{MAX_ACCESS_BATCH, Op, Outcome, Reader, RotateRequest, Store, StoreError};
use tokendb_sweeper::{MetricsSnapshot, PassReport, Sweeper, SweeperMetrics};

struct Inner {
    store: Arc<Store>,
    config: Config,
    events: Arc<EventBus>,
    sweeper: Mutex<Option<Sweeper>>,
    manual_metrics: SweeperMetrics,
    last_now: AtomicU64,
    closed: AtomicBool,
}

/// An open token database. Cheap to clone (an `Arc`), `Send + Sync`: share one between all
/// request handlers. Every method is synchronous; from an async runtime, call it through
/// `spawn_blocking` (lookups take microseconds, but writes wait for a durable commit):
///
/// ```text
/// let db = db.clone();
/// let status = tokio::task::spawn_blocking(move || db.validate(&token)).await??;
/// ```
#[derive(Clone)]
pub struct TokenDb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDb")
            .field("path", &self.inner.store.path())
            .finish_non_exhaustive()
    }
}

fn refusal(r: Refusal) -> RotateRefusal {
    match r {
        Refusal::Unknown => RotateRefusal::Unknown,
        Refusal::Revoked(why) => RotateRefusal::Revoked(why),
        Refusal::ExpiredAbsolute => RotateRefusal::ExpiredAbsolute,
        Refusal::ExpiredIdle => RotateRefusal::ExpiredIdle,
        Refusal::ClientMismatch => RotateRefusal::ClientMismatch,
        Refusal::ScopeWidened => RotateRefusal::ScopeWidened,
    }
}

fn status_of(s: Status) -> TokenStatus {
    match s {
        Status::Active => TokenStatus::Active,
        Status::Revoked(r) => TokenStatus::Revoked(r),
        Status::ExpiredAbsolute => TokenStatus::ExpiredAbsolute,
        Status::ExpiredIdle => TokenStatus::ExpiredIdle,
    }
}

fn access_status(rec: &AccessStatus, now: u64) -> TokenStatus {
    match rec.revoked {
        Some(reason) => TokenStatus::Revoked(reason),
        None if now >= rec.deadline => TokenStatus::ExpiredAbsolute,
        None => TokenStatus::Active,
    }
}

/// An access token minted and its record built, not stored yet.
struct MintedAccess {
    token: AccessToken,
    id: AccessKey,
    record: AccessRecord,
}

/// What a refresh token's lookup found.
enum RefreshLookup {
    Unknown,
    Found { rec: FamilyRecord, current: bool },
}

impl TokenDb {
    /// Creates a new database file under `master`.
    ///
    /// # Errors
    /// [`Error::Store`] with [`StoreError::AlreadyExists`] if the file exists; I/O errors.
    pub fn create(path: impl AsRef<Path>, master: &MasterKey, config: Config) -> Result<Self> {
        let store = Store::create(path, master, config.store)?;
        Self::start(store, config)
    }

    /// Opens an existing database file.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`], [`StoreError::NotATokenDb`], [`StoreError::NewerFormat`]
    /// (each leaving the file untouched), [`StoreError::NotFound`], [`StoreError::Locked`].
    pub fn open(path: impl AsRef<Path>, master: &MasterKey, config: Config) -> Result<Self> {
        let store = Store::open(path, master, config.store)?;
        Self::start(store, config)
    }

    /// Opens the file if it exists, creates it otherwise.
    ///
    /// # Errors
    /// As [`TokenDb::open`] and [`TokenDb::create`].
    pub fn open_or_create(
        path: impl AsRef<Path>,
        master: &MasterKey,
        config: Config,
    ) -> Result<Self> {
        if path.as_ref().exists() {
            Self::open(path, master, config)
        } else {
            Self::create(path, master, config)
        }
    }

    fn start(store: Store, config: Config) -> Result<Self> {
        let store = Arc::new(store);
        let events = Arc::new(EventBus::default());
        let sweeper = if config.sweeper.enabled {
            let bus = Arc::clone(&events);
            let observer: tokendb_sweeper::PassObserver = Box::new(move |r: &PassReport| {
                bus.emit(Event::Expired {
                    families: r.families,
                    tokens: r.tokens,
                });
            });
            Some(
                Sweeper::start_with_observer(
                    Arc::clone(&store),
                    Arc::clone(&config.clock),
                    config.sweeper,
                    observer,
                )
                .map_err(StoreError::Io)?,
            )
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                events,
                sweeper: Mutex::new(sweeper),
                manual_metrics: SweeperMetrics::default(),
                last_now: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The current time: the clock's, but never earlier than a time already used. A clock that
    /// steps backwards (NTP) cannot make a rotation's time precede the previous one's.
    fn now(&self) -> u64 {
        let t = self.inner.config.clock.now_ms();
        // Read first: in the common case time has not gone back and, within a millisecond,
        // nothing needs writing, so concurrent lookups do not contend on this cache line.
        let prev = self.inner.last_now.load(Ordering::Acquire);
        if t > prev {
            self.inner.last_now.fetch_max(t, Ordering::AcqRel).max(t)
        } else {
            prev
        }
    }

    fn keys(&self) -> Arc<KeyRing> {
        self.inner.store.keys()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Store(StoreError::Closed));
        }
        if let Some(why) = self.inner.store.failure() {
            return Err(Error::Store(StoreError::Failed(why)));
        }
        Ok(())
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The underlying store, for operator tooling (`verify`, `stats`, re-keying).
    #[must_use]
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Subscribes to [`Event`]s. Each subscriber has its own bounded queue
    /// ([`crate::ConfigBuilder::event_capacity`]); when it is full, events for that subscriber are
    /// dropped rather than slowing the database.
    #[must_use]
    pub fn subscribe(&self) -> Receiver<Event> {
        self.inner
            .events
            .subscribe(self.inner.config.event_capacity)
    }

    fn parse(&self, token: &str) -> Result<ParsedToken> {
        self.inner
            .config
            .format
            .parse(token)
            .map_err(Error::Malformed)
    }

    // ---- issue ----

    fn body(grant: &Grant) -> RecordBody {
        RecordBody {
            subject: grant.subject.clone(),
            client_id: grant.client_id.clone(),
            scope: grant.scope.clone(),
            claims: grant.claims.clone(),
        }
    }

    /// Issues the first refresh token of a new family for `grant`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for limits, [`Error::CapReached`] if the family cap refuses.
    pub fn issue_refresh(&self, grant: &Grant) -> Result<IssuedRefresh> {
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let policy = self.inner.config.policy;
        let (absolute, idle) = policy
            .deadlines_at_issue(now)
            .map_err(|e| Error::Config(e.to_string()))?;
        let family = FamilyId::generate();
        let token = RefreshToken::mint(&keys, family, 1);
        let (key_id, body) = FamilyRecord::seal_body(&keys, &family, &Self::body(grant))?;
        let record = FamilyRecord {
            key_id,
            state: RecordState::Active,
            created_at: now,
            absolute_deadline: absolute,
            idle_deadline: idle,
            generation: 1,
            rotated_at: now,
            current: keys.token_id(TokenKind::Refresh, &token.secret),
            subject: keys.subject_hash(&grant.subject),
            client: keys.client_hash(&grant.client_id),
            grace: Vec::new(),
            body,
        };
        let op = Op::IssueFamily {
            id: family,
            record: Box::new(record),
            cap: self.inner.config.cap,
        };
        match self.inner.store.submit(op, now)? {
            Outcome::Issued { evicted, .. } => {
                for f in &evicted {
                    self.inner.events.emit(Event::FamilyRevoked {
                        family: *f,
                        reason: RevokeReason::Evicted,
                    });
                }
                Ok(IssuedRefresh {
                    token: self.inner.config.format.encode_refresh(&token),
                    family,
                    absolute: Expiry::new(absolute, now),
                    idle: Expiry::new(idle, now),
                    evicted,
                })
            }
            Outcome::CapReached { limit } => Err(Error::CapReached { limit }),
            other => Err(Error::Store(StoreError::Failed(format!(
                "unexpected outcome {other:?}"
            )))),
        }
    }

    /// Mints an access token for `body` and builds its sealed record: the one place access
    /// records are made, for single and batch issue alike.
    fn mint_access(
        &self,
        body: &RecordBody,
        family: Option<(FamilyId, u64)>,
        now: u64,
    ) -> Result<MintedAccess> {
        let keys = self.keys();
        // A family's deadline only moves forward, so capping at the one read now is safe; the
        // deadline is minted into the token (it is the token's storage order).
        let mut deadline = now.saturating_add(self.inner.config.access_ms);
        if let Some((_, cap)) = family {
            deadline = deadline.min(cap);
        }
        let token = AccessToken::mint(deadline);
        let id = keys.access_key(&token);
        let (key_id, sealed) = AccessRecord::seal_body(&keys, &id, body)?;
        let record = AccessRecord {
            key_id,
            state: RecordState::Active,
            family: family.map(|(f, _)| f),
            subject: keys.subject_hash(&body.subject),
            client: keys.client_hash(&body.client_id),
            issued_at: now,
            deadline,
            body: sealed,
        };
        Ok(MintedAccess { token, id, record })
    }

    fn issue_access_record(
        &self,
        body: &RecordBody,
        family: Option<(FamilyId, u64)>,
        now: u64,
    ) -> Result<IssuedAccess> {
        let MintedAccess { token, id, record } = self.mint_access(body, family, now)?;
        match self.inner.store.submit(
            Op::IssueAccess {
                key: id,
                record: Box::new(record),
            },
            now,
        )? {
            Outcome::Issued { deadline, .. } => Ok(IssuedAccess {
                token: self.inner.config.format.encode_access(&token),
                expires: Expiry::new(deadline, now),
                scope: body.scope.clone(),
            }),
            Outcome::NotFound => Err(Error::FamilyNotFound),
            Outcome::Refused(r) => Err(Error::Refused(refusal(r))),
            other => Err(Error::Store(StoreError::Failed(format!(
                "unexpected outcome {other:?}"
            )))),
        }
    }

    /// Issues a standalone access token (client credentials, say) for `grant`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for limits.
    pub fn issue_access(&self, grant: &Grant) -> Result<IssuedAccess> {
        self.check_open()?;
        let now = self.now();
        self.issue_access_record(&Self::body(grant), None, now)
    }

    /// Issues standalone access tokens for many grants at once — imports, migrations, bulk
    /// loads: the tokens [`TokenDb::issue_access`] would issue one by one (same checks, same
    /// lifetime, same records), stored in **one** write transaction with one durable commit.
    ///
    /// - **All or nothing.** Every grant is checked, and its record built, before anything is
    ///   written: a bad grant fails the call with [`Error::BatchItem`], which names its index and
    ///   holds the error `issue_access` would have returned for it. A storage error fails the
    ///   whole batch too; after `Ok`, every token is durable.
    /// - **Order.** One [`IssuedAccess`] per grant, in the order of `grants`. All of them are
    ///   issued at the same instant, so they expire together.
    /// - **Size.** At most [`MAX_ACCESS_BATCH`] grants per call ([`Error::BatchTooLarge`]
    ///   beyond it, before any work). While a batch is applied the writer thread serves no other
    ///   write, so bigger loads are several calls; they may come from several threads, since
    ///   records are sealed on the calling thread. An empty batch returns an empty vector and
    ///   writes nothing.
    /// - **Standalone tokens only**, as with `issue_access` (a [`Grant`] names no family).
    ///   Family-tied tokens are issued one by one with [`TokenDb::issue_access_for_family`]:
    ///   each is checked against its family, which can refuse it on its own.
    /// - Like `issue_access`, it emits no [`Event`].
    ///
    /// ```
    /// use tokendb::{Config, Grant, MasterKey, TokenDb};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let db = TokenDb::create(dir.path().join("tokens.tdb"), &MasterKey::generate(), Config::default())?;
    /// let grants = (0..3)
    ///     .map(|i| Grant::new(format!("service-{i}"), "importer", "api"))
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// let issued = db.issue_access_batch(&grants)?;
    /// assert_eq!(issued.len(), 3);
    /// let info = db.introspect(issued[1].token.expose())?;
    /// assert_eq!(info.sub.as_deref(), Some("service-1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`], [`Error::BatchItem`] (for limits, as `issue_access`'s
    /// [`Error::InvalidInput`]), storage errors; in every case nothing was written.
    pub fn issue_access_batch(&self, grants: &[Grant]) -> Result<Vec<IssuedAccess>> {
        self.check_open()?;
        if grants.len() > MAX_ACCESS_BATCH {
            return Err(Error::BatchTooLarge {
                len: grants.len(),
                max: MAX_ACCESS_BATCH,
            });
        }
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let format = &self.inner.config.format;
        let mut tokens = Vec::with_capacity(grants.len());
        let mut issued = Vec::with_capacity(grants.len());
        for (index, grant) in grants.iter().enumerate() {
            let MintedAccess { token, id, record } = self
                .mint_access(&Self::body(grant), None, now)
                .map_err(|e| Error::BatchItem {
                    index,
                    error: Box::new(e),
                })?;
            issued.push(IssuedAccess {
                token: format.encode_access(&token),
                expires: Expiry::new(record.deadline, now),
                scope: grant.scope.clone(),
            });
            tokens.push((id, record));
        }
        match self
            .inner
            .store
            .submit(Op::IssueAccessBatch { tokens }, now)?
        {
            Outcome::IssuedBatch { tokens } if tokens == issued.len() as u64 => Ok(issued),
            other => Err(Error::Store(StoreError::Failed(format!(
                "unexpected outcome {other:?}"
            )))),
        }
    }

    /// Issues an access token tied to a family: revoked with it, and never outliving it (its
    /// deadline is capped at the family's deadline, the earlier of absolute and idle). `scope` may narrow the family's grant (never widen it).
    ///
    /// # Errors
    /// [`Error::FamilyNotFound`], [`Error::Refused`] if the family is revoked or expired or the
    /// scope is wider than the grant.
    pub fn issue_access_for_family(
        &self,
        family: FamilyId,
        scope: Option<&Scope>,
    ) -> Result<IssuedAccess> {
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let rec = self
            .inner
            .store
            .family(&family)?
            .ok_or(Error::FamilyNotFound)?;
        let mut body = rec.open_body(&family, &keys).map_err(StoreError::Corrupt)?;
        if let Some(s) = scope {
            if !s.is_subset_of(&body.scope) {
                return Err(Error::Refused(RotateRefusal::ScopeWidened));
            }
            body.scope = s.clone();
        }
        self.issue_access_record(&body, Some((family, rec.deadline())), now)
    }

    // ---- lookups ----

    fn lookup_refresh(r: &Reader<'_>, t: &RefreshToken) -> Result<RefreshLookup> {
        let keys = r.keys();
        if !t.tag_is_valid(keys) {
            return Ok(RefreshLookup::Unknown);
        }
        let Some(rec) = r.family(&t.family)? else {
            return Ok(RefreshLookup::Unknown);
        };
        if t.generation > rec.generation || t.generation == 0 {
            return Ok(RefreshLookup::Unknown);
        }
        let current = t.generation == rec.generation;
        if current && rec.current != keys.token_id(TokenKind::Refresh, &t.secret) {
            return Ok(RefreshLookup::Unknown);
        }
        Ok(RefreshLookup::Found { rec, current })
    }

    /// Whether a token is active, and if not, why. One point read; no decryption. An expired
    /// token is refused even if the sweeper has not deleted it yet.
    ///
    /// # Errors
    /// [`Error::Malformed`] (no disk access), storage errors, [`StoreError::Corrupt`] for a
    /// damaged record.
    pub fn validate(&self, token: &str) -> Result<Validation> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        self.inner.store.read(|r| match &parsed {
            ParsedToken::Access(t) => {
                let id = r.keys().access_key(t);
                Ok(match r.token_status(&id)? {
                    None => Validation {
                        kind: TokenKind::Access,
                        status: TokenStatus::Unknown,
                        expires: None,
                        absolute: None,
                        idle: None,
                        family: None,
                    },
                    Some(rec) => Validation {
                        kind: TokenKind::Access,
                        status: access_status(&rec, now),
                        expires: Some(Expiry::new(rec.deadline, now)),
                        absolute: Some(Expiry::new(rec.deadline, now)),
                        idle: None,
                        family: rec.family,
                    },
                })
            }
            ParsedToken::Refresh(t) => Ok(match Self::lookup_refresh(r, t)? {
                RefreshLookup::Unknown => Validation {
                    kind: TokenKind::Refresh,
                    status: TokenStatus::Unknown,
                    expires: None,
                    absolute: None,
                    idle: None,
                    family: None,
                },
                RefreshLookup::Found { rec, current } => {
                    let status = match family_status(&rec, now) {
                        Status::Active if !current => TokenStatus::Rotated,
                        s => status_of(s),
                    };
                    Validation {
                        kind: TokenKind::Refresh,
                        status,
                        expires: Some(Expiry::new(rec.deadline(), now)),
                        absolute: Some(Expiry::new(rec.absolute_deadline, now)),
                        idle: Some(Expiry::new(rec.idle_deadline, now)),
                        family: Some(t.family),
                    }
                }
            }),
        })
    }

    /// RFC 7662 introspection: the token's status and, when active, its claims (this opens the
    /// sealed body).
    ///
    /// # Errors
    /// As [`TokenDb::validate`].
    pub fn introspect(&self, token: &str) -> Result<Introspection> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        self.inner.store.read(|r| match &parsed {
            ParsedToken::Access(t) => {
                let id = r.keys().access_key(t);
                let Some(rec) = r.token_status_and_body(&id)? else {
                    return Ok(Introspection::inactive(TokenStatus::Unknown));
                };
                let status = access_status(&rec, now);
                if status != TokenStatus::Active {
                    return Ok(Introspection::inactive(status));
                }
                let body = rec.open_body(&id, r.keys()).map_err(StoreError::Corrupt)?;
                let exp = Expiry::new(rec.deadline, now);
                Ok(Introspection {
                    active: true,
                    status,
                    scope: Some(body.scope),
                    client_id: Some(body.client_id),
                    sub: Some(body.subject),
                    exp: Some(exp),
                    iat: Some(rec.issued_at / 1000),
                    token_type: Some(TokenKind::Access.hint()),
                    absolute: Some(exp),
                    idle: None,
                    claims: Some(body.claims),
                    family: rec.family,
                })
            }
            ParsedToken::Refresh(t) => match Self::lookup_refresh(r, t)? {
                RefreshLookup::Unknown => Ok(Introspection::inactive(TokenStatus::Unknown)),
                RefreshLookup::Found { rec, current } => {
                    let status = match family_status(&rec, now) {
                        Status::Active if !current => TokenStatus::Rotated,
                        s => status_of(s),
                    };
                    if status != TokenStatus::Active {
                        return Ok(Introspection::inactive(status));
                    }
                    let body = rec
                        .open_body(&t.family, r.keys())
                        .map_err(StoreError::Corrupt)?;
                    Ok(Introspection {
                        active: true,
                        status,
                        scope: Some(body.scope),
                        client_id: Some(body.client_id),
                        sub: Some(body.subject),
                        exp: Some(Expiry::new(rec.deadline(), now)),
                        iat: Some(rec.rotated_at / 1000),
                        token_type: Some(TokenKind::Refresh.hint()),
                        absolute: Some(Expiry::new(rec.absolute_deadline, now)),
                        idle: Some(Expiry::new(rec.idle_deadline, now)),
                        claims: Some(body.claims),
                        family: Some(t.family),
                    })
                }
            },
        })
    }

    // ---- rotation ----

    /// Presents a refresh token for rotation (the `refresh_token` grant). Atomically checks the
    /// client binding, state, both deadlines and the scope, and mints the next generation with
    /// the same absolute deadline. Presenting an older generation revokes the whole family and
    /// returns [`RotateRefusal::ReuseDetected`] (and emits [`Event::ReuseDetected`]); within the
    /// grace period, the immediate predecessor gets the same successor back (`replayed`).
    ///
    /// With [`crate::ConfigBuilder::dangerous_non_rotating_refresh_tokens`], the same token is
    /// returned and only its idle deadline slides.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::Refused`] (map with [`Error::oauth_error`]), storage errors.
    pub fn rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Result<Rotated> {
        let ParsedToken::Refresh(t) = self.parse(token)? else {
            return Err(Error::Refused(RotateRefusal::Unknown));
        };
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let successor = TokenSecret::generate();
        let req = RotateRequest {
            family: t.family,
            generation: t.generation,
            tag_valid: t.tag_is_valid(&keys),
            presented_id: keys.token_id(TokenKind::Refresh, &t.secret),
            client: keys.client_hash(client_id),
            requested_scope: requested_scope.cloned(),
            policy: self.inner.config.policy,
            successor_id: keys.token_id(TokenKind::Refresh, &successor),
            successor,
        };
        let successor_secret = TokenSecret::from_bytes(*req.successor.expose());
        let format = &self.inner.config.format;
        match self.inner.store.submit(Op::Rotate(Box::new(req)), now)? {
            Outcome::Rotated {
                generation,
                absolute_deadline,
                idle_deadline,
            } => {
                let token =
                    RefreshToken::with_secret(&keys, t.family, generation, successor_secret);
                Ok(Rotated {
                    token: format.encode_refresh(&token),
                    family: t.family,
                    generation,
                    absolute: Expiry::new(absolute_deadline, now),
                    idle: Expiry::new(idle_deadline, now),
                    scope: requested_scope.cloned(),
                    replayed: false,
                })
            }
            Outcome::GraceReplay {
                generation,
                secret,
                absolute_deadline,
                idle_deadline,
            } => {
                let token = RefreshToken::with_secret(&keys, t.family, generation, secret);
                Ok(Rotated {
                    token: format.encode_refresh(&token),
                    family: t.family,
                    generation,
                    absolute: Expiry::new(absolute_deadline, now),
                    idle: Expiry::new(idle_deadline, now),
                    scope: requested_scope.cloned(),
                    replayed: true,
                })
            }
            Outcome::Slid {
                absolute_deadline,
                idle_deadline,
            } => Ok(Rotated {
                token: format.encode_refresh(&t),
                family: t.family,
                generation: t.generation,
                absolute: Expiry::new(absolute_deadline, now),
                idle: Expiry::new(idle_deadline, now),
                scope: requested_scope.cloned(),
                replayed: false,
            }),
            Outcome::ReuseDetected {
                presented,
                newest,
                ms_since_rotation,
                tokens_revoked,
            } => {
                self.inner.events.emit(Event::ReuseDetected {
                    family: t.family,
                    presented_generation: presented,
                    newest_generation: newest,
                    ms_since_rotation,
                    tokens_revoked,
                });
                self.inner.events.emit(Event::FamilyRevoked {
                    family: t.family,
                    reason: RevokeReason::ReuseDetected,
                });
                Err(Error::Refused(RotateRefusal::ReuseDetected {
                    family: t.family,
                    presented,
                    newest,
                }))
            }
            Outcome::Refused(r) => {
                if r == Refusal::ClientMismatch {
                    self.inner
                        .events
                        .emit(Event::ClientMismatch { family: t.family });
                }
                Err(Error::Refused(refusal(r)))
            }
            other => Err(Error::Store(StoreError::Failed(format!(
                "unexpected outcome {other:?}"
            )))),
        }
    }

    // ---- revocation ----

    fn revoked(&self, outcome: Outcome, reason: RevokeReason) -> Revoked {
        match outcome {
            Outcome::Revoked {
                families,
                tokens,
                family_ids,
            } => {
                for family in family_ids {
                    self.inner
                        .events
                        .emit(Event::FamilyRevoked { family, reason });
                }
                Revoked { families, tokens }
            }
            _ => Revoked::default(),
        }
    }

    /// RFC 7009 revocation. A refresh token (of any genuine generation) revokes its family with
    /// every access token tied to it; an access token revokes itself. Unknown or already revoked
    /// tokens are not an error (RFC 7009 §2.2). Seen by every lookup that starts after this
    /// returns.
    ///
    /// # Errors
    /// [`Error::Malformed`] (nothing read), storage errors.
    pub fn revoke(&self, token: &str) -> Result<Revoked> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        match parsed {
            ParsedToken::Access(t) => {
                let key = keys.access_key(&t);
                Ok(self.revoked(
                    self.inner.store.submit(Op::RevokeToken { key }, now)?,
                    RevokeReason::Requested,
                ))
            }
            ParsedToken::Refresh(t) => {
                match self.inner.store.read(|r| Self::lookup_refresh(r, &t))? {
                    RefreshLookup::Unknown => Ok(Revoked::default()),
                    RefreshLookup::Found { .. } => {
                        self.revoke_family_reason(t.family, RevokeReason::Requested, now)
                    }
                }
            }
        }
    }

    fn revoke_family_reason(
        &self,
        family: FamilyId,
        reason: RevokeReason,
        now: u64,
    ) -> Result<Revoked> {
        let outcome = self
            .inner
            .store
            .submit(Op::RevokeFamily { id: family, reason }, now)?;
        Ok(self.revoked(outcome, reason))
    }

    /// Revokes a family by id, with its access tokens.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_family(&self, family: FamilyId) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        self.revoke_family_reason(family, RevokeReason::Requested, now)
    }

    /// Revokes every family and standalone access token of `subject` (only those of `client_id`
    /// if given): "log out everywhere".
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_subject(&self, subject: &str, client_id: Option<&str>) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let op = Op::RevokeSubject {
            subject: keys.subject_hash(subject),
            client: client_id.map(|c| keys.client_hash(c)),
        };
        Ok(self.revoked(self.inner.store.submit(op, now)?, RevokeReason::Subject))
    }

    /// Revokes every family and standalone access token of a client.
    ///
    /// # Errors
    /// Storage errors.
    pub fn revoke_client(&self, client_id: &str) -> Result<Revoked> {
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let op = Op::RevokeClient {
            client: keys.client_hash(client_id),
        };
        Ok(self.revoked(self.inner.store.submit(op, now)?, RevokeReason::Client))
    }

    // ---- maintenance ----

    /// Runs one sweep pass now, examining at most `limit` due entries (`None`: all). Works
    /// whether or not the background sweeper is enabled.
    ///
    /// # Errors
    /// Storage errors.
    pub fn sweep_now(&self, limit: Option<u64>) -> Result<PassReport> {
        self.check_open()?;
        let report = {
            let guard = self
                .inner
                .sweeper
                .lock()
                .map_err(|_| StoreError::Failed("lock poisoned".into()))?;
            match guard.as_ref() {
                Some(s) => s.sweep_now(limit)?,
                None => tokendb_sweeper::run_pass(
                    &self.inner.store,
                    self.now(),
                    self.inner.config.sweeper.batch_size,
                    limit,
                    None,
                    &AtomicBool::new(false),
                    &self.inner.manual_metrics,
                )?,
            }
        };
        if report.families + report.tokens > 0 {
            self.inner.events.emit(Event::Expired {
                families: report.families,
                tokens: report.tokens,
            });
        }
        Ok(report)
    }

    /// Sweeper counters (background and manual passes).
    #[must_use]
    pub fn sweeper_metrics(&self) -> MetricsSnapshot {
        let guard = self.inner.sweeper.lock();
        match guard.as_ref().ok().and_then(|g| g.as_ref()) {
            Some(s) => s.metrics().snapshot(),
            None => self.inner.manual_metrics.snapshot(),
        }
    }

    /// Re-wraps the data keys under `new`; afterwards only `new` opens the database. No record
    /// is rewritten.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `current` is not the key in use.
    pub fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()> {
        self.check_open()?;
        Ok(self.inner.store.rotate_master_key(current, new)?)
    }

    /// Why the database is failed (a background thread died), if it is.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    /// Stops the sweeper, drains the writer (queued writes complete) and closes the file. Every
    /// later call, on any clone, returns [`StoreError::Closed`].
    ///
    /// # Errors
    /// Storage errors from the final close.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let sweeper = self.inner.sweeper.lock().ok().and_then(|mut g| g.take());
        if let Some(s) = sweeper {
            s.shutdown();
        }
        Ok(self.inner.store.close()?)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut g) = self.sweeper.lock()
            && let Some(s) = g.take()
        {
            s.shutdown();
        }
        let _ = self.store.close();
    }
}
