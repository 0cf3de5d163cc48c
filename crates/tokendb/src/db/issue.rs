//! Issuing: new families, access tokens tied to a family, standalone access tokens one by one
//! or in batches.

use super::{TokenDb, refuse, submit};
use crate::error::{Error, Result, RotateRefusal, refusal};
use crate::telemetry::Op;
use crate::types::{Event, Expiry, Grant, IssuedAccess, IssuedRefresh};
use tokendb_backend::{AccessIssue, Failure, FamilyIssue, MAX_ACCESS_BATCH, Pending, StoreError};
use tokendb_core::{
    AccessKey, AccessRecord, AccessToken, Confirmation, FamilyId, FamilyRecord, RecordBody,
    RecordState, RefreshToken, RevokeReason, Scope, TokenKind,
};
use tokendb_rotation::{Admission, admit_access};

/// A backend answered with an outcome this build does not know (its enums are
/// `#[non_exhaustive]`): a bug, reported as such.
pub(super) fn unknown_outcome() -> Error {
    Error::Store(StoreError::Failed(Failure::Internal(
        "an outcome this build does not know",
    )))
}

/// An access token minted and its record built, not stored yet.
struct MintedAccess {
    token: AccessToken,
    id: AccessKey,
    record: AccessRecord,
}

fn body(grant: &Grant) -> RecordBody {
    RecordBody {
        subject: grant.subject.clone(),
        client_id: grant.client_id.clone(),
        scope: grant.scope.clone(),
        claims: grant.claims.clone(),
    }
}

impl TokenDb {
    /// Issues the first refresh token of a new family for `grant`. A grant with a
    /// confirmation ([`Grant::with_confirmation`]) makes a sender-constrained family: every
    /// rotation must prove it ([`TokenDb::refresh_confirmed`]), and every access token issued
    /// for the family carries it.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for limits, [`Error::CapReached`] if the family cap refuses.
    pub fn issue_refresh(&self, grant: &Grant) -> Result<IssuedRefresh> {
        self.start_issue_refresh(grant).wait()
    }

    pub(crate) fn start_issue_refresh(&self, grant: &Grant) -> Pending<IssuedRefresh, Error> {
        let op = Op::write("issue_refresh");
        let prepared = (|| {
            self.check_open()?;
            let now = self.now();
            let keys = self.keys();
            let policy = self.inner.config.policy;
            let (absolute, idle) = policy.deadlines_at_issue(now).map_err(Error::Lifetime)?;
            let family = FamilyId::generate();
            let hashing = self.hashing();
            let token = RefreshToken::mint(hashing, family, 1);
            let (key_id, sealed) = FamilyRecord::seal_body(&keys, &family, &body(grant))?;
            let record = FamilyRecord {
                key_id,
                state: RecordState::Active,
                created_at: now,
                absolute_deadline: absolute,
                idle_deadline: idle,
                generation: 1,
                rotated_at: now,
                current: hashing.token_id(TokenKind::Refresh, &token.secret),
                subject: hashing.subject_hash(&grant.subject),
                client: hashing.client_hash(&grant.client_id),
                grace: Vec::new(),
                body: sealed,
                confirmation: grant.confirmation,
            };
            Ok::<_, Error>((now, family, token, record))
        })();
        let (now, family, token, record) = match prepared {
            Ok(p) => p,
            Err(e) => return refuse(op, e),
        };
        let (absolute, idle) = (record.absolute_deadline, record.idle_deadline);
        let events = self.events();
        let issued = submit(op, |done| {
            let done = done.observed(move |r| {
                if let Ok(FamilyIssue::Issued { evicted }) = r {
                    for f in evicted {
                        events.emit(Event::FamilyRevoked {
                            family: *f,
                            reason: RevokeReason::Evicted,
                        });
                    }
                }
            });
            self.backend()
                .issue_family(family, record, self.inner.config.cap, now, done);
        });
        let db = self.clone();
        issued.map(move |r| match r? {
            FamilyIssue::Issued { evicted } => Ok(IssuedRefresh {
                token: db.inner.config.format.encode_refresh(&token),
                family,
                absolute: Expiry::new(absolute, now),
                idle: Expiry::new(idle, now),
                evicted,
            }),
            FamilyIssue::CapReached { limit } => Err(Error::CapReached { limit }),
            _ => Err(unknown_outcome()),
        })
    }

    /// Mints an access token for `body` and builds its sealed record: the one place access
    /// records are made, for single and batch issue alike.
    fn mint_access(
        &self,
        body: &RecordBody,
        family: Option<(FamilyId, u64)>,
        confirmation: Option<Confirmation>,
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
        let hashing = self.hashing();
        let id = hashing.access_key(&token);
        let (key_id, sealed) = AccessRecord::seal_body(&keys, &id, body)?;
        let record = AccessRecord {
            key_id,
            state: RecordState::Active,
            family: family.map(|(f, _)| f),
            subject: hashing.subject_hash(&body.subject),
            client: hashing.client_hash(&body.client_id),
            issued_at: now,
            deadline,
            body: sealed,
            confirmation,
        };
        Ok(MintedAccess { token, id, record })
    }

    fn start_issue_access_record(
        &self,
        op: Op,
        body: &RecordBody,
        family: Option<(FamilyId, u64)>,
        confirmation: Option<Confirmation>,
        now: u64,
    ) -> Pending<IssuedAccess, Error> {
        let minted = self.mint_access(body, family, confirmation, now);
        let MintedAccess { token, id, record } = match minted {
            Ok(m) => m,
            Err(e) => return refuse(op, e),
        };
        let deadline = record.deadline;
        let scope = body.scope.clone();
        let confirmation = record.confirmation;
        let db = self.clone();
        submit(op, |done| {
            self.backend().issue_access(id, record, now, done)
        })
        .map(move |r| match r? {
            AccessIssue::Issued => Ok(IssuedAccess {
                token: db.inner.config.format.encode_access(&token),
                expires: Expiry::new(deadline, now),
                scope,
                confirmation,
            }),
            AccessIssue::FamilyNotFound => Err(Error::FamilyNotFound),
            AccessIssue::Refused(r) => Err(Error::Refused(refusal(r))),
            _ => Err(unknown_outcome()),
        })
    }

    /// Issues a standalone access token (client credentials, say) for `grant`, bound to the
    /// grant's confirmation if it has one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for limits.
    pub fn issue_access(&self, grant: &Grant) -> Result<IssuedAccess> {
        self.start_issue_access(grant).wait()
    }

    pub(crate) fn start_issue_access(&self, grant: &Grant) -> Pending<IssuedAccess, Error> {
        let op = Op::write("issue_access");
        if let Err(e) = self.check_open() {
            return refuse(op, e);
        }
        let now = self.now();
        self.start_issue_access_record(op, &body(grant), None, grant.confirmation, now)
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
    /// assert_eq!(info.sub(), Some("service-1"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`], [`Error::BatchItem`] (for limits, as `issue_access`'s
    /// [`Error::InvalidInput`]), storage errors; in every case nothing was written.
    pub fn issue_access_batch(&self, grants: &[Grant]) -> Result<Vec<IssuedAccess>> {
        self.start_issue_access_batch(grants).wait()
    }

    pub(crate) fn start_issue_access_batch(
        &self,
        grants: &[Grant],
    ) -> Pending<Vec<IssuedAccess>, Error> {
        let op = Op::write("issue_access_batch");
        let prepared = (|| {
            self.check_open()?;
            if grants.len() > MAX_ACCESS_BATCH {
                return Err(Error::BatchTooLarge {
                    len: grants.len(),
                    max: MAX_ACCESS_BATCH,
                });
            }
            if grants.is_empty() {
                return Ok(None);
            }
            let now = self.now();
            let format = &self.inner.config.format;
            let mut tokens = Vec::with_capacity(grants.len());
            let mut issued = Vec::with_capacity(grants.len());
            for (index, grant) in grants.iter().enumerate() {
                let MintedAccess { token, id, record } = self
                    .mint_access(&body(grant), None, grant.confirmation, now)
                    .map_err(|e| Error::BatchItem {
                        index,
                        error: Box::new(e),
                    })?;
                issued.push(IssuedAccess {
                    token: format.encode_access(&token),
                    expires: Expiry::new(record.deadline, now),
                    scope: grant.scope.clone(),
                    confirmation: record.confirmation,
                });
                tokens.push((id, record));
            }
            Ok(Some((now, tokens, issued)))
        })();
        let (now, tokens, issued) = match prepared {
            Ok(Some(p)) => p,
            Ok(None) => {
                op.finish("ok", None);
                return Pending::ready(Ok(Vec::new()));
            }
            Err(e) => return refuse(op, e),
        };
        submit(op, |done| {
            self.backend().issue_access_batch(tokens, now, done)
        })
        .map(move |r| {
            if r? != issued.len() as u64 {
                return Err(Error::Store(StoreError::Failed(Failure::Internal(
                    "a batch stored another number of tokens",
                ))));
            }
            Ok(issued)
        })
    }

    /// Issues an access token tied to a family: revoked with it, and never outliving it (its
    /// deadline is capped at the family's deadline, the earlier of absolute and idle). `scope`
    /// may narrow the family's grant (never widen it). A family that refuses (revoked,
    /// expired) is refused from a read, without a write. The token carries the family's
    /// confirmation, if it is sender-constrained.
    ///
    /// # Errors
    /// [`Error::FamilyNotFound`], [`Error::Refused`] if the family is revoked or expired or the
    /// scope is wider than the grant.
    pub fn issue_access_for_family(
        &self,
        family: FamilyId,
        scope: Option<&Scope>,
    ) -> Result<IssuedAccess> {
        self.start_issue_access_for_family(family, scope).wait()
    }

    pub(crate) fn start_issue_access_for_family(
        &self,
        family: FamilyId,
        scope: Option<&Scope>,
    ) -> Pending<IssuedAccess, Error> {
        let op = Op::write("issue_access_for_family");
        match self.prepare_access_for_family(family, scope) {
            Ok((body, cap, confirmation, now)) => {
                self.start_issue_access_record(op, &body, Some((family, cap)), confirmation, now)
            }
            Err(e) => refuse(op, e),
        }
    }

    /// The body and deadline cap of an access token for `family`, read from a snapshot: a
    /// family that refuses it is refused here, without a write.
    fn prepare_access_for_family(
        &self,
        family: FamilyId,
        scope: Option<&Scope>,
    ) -> Result<(RecordBody, u64, Option<Confirmation>, u64)> {
        self.check_open()?;
        let now = self.now();
        let keys = self.keys();
        let rec = self
            .backend()
            .family(&family)?
            .ok_or(Error::FamilyNotFound)?;
        let mut body = rec.open_body(&family, &keys).map_err(StoreError::Corrupt)?;
        if let Some(s) = scope {
            if !s.is_subset_of(&body.scope) {
                return Err(Error::Refused(RotateRefusal::ScopeWidened));
            }
            body.scope = s.clone();
        }
        if let Admission::Refuse(r) = admit_access(&rec, now, rec.deadline()) {
            return Err(Error::Refused(refusal(r)));
        }
        Ok((body, rec.deadline(), rec.confirmation, now))
    }
}
