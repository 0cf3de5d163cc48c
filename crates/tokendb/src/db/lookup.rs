//! Lookups: validation (status only, no decryption) and RFC 7662 introspection.

use super::TokenDb;
use crate::error::Result;
use crate::telemetry::{Label, Lookup, LookupOp, status_label};
use crate::types::{Expiry, Introspection, TokenClaims, TokenStatus, Validation};
use tokendb_backend::{Failure, StoreError};
use tokendb_core::{
    AccessStatus, Confirmation, FamilyId, FamilyRecord, ParsedToken, RecordBody, RefreshToken,
    TokenKind,
};
use tokendb_rotation::{Presentation, Standing, Status, classify};

pub(super) fn status_of(s: Status) -> TokenStatus {
    match s {
        Status::Active => TokenStatus::Active,
        Status::Revoked(r) => TokenStatus::Revoked(r),
        Status::ExpiredAbsolute => TokenStatus::ExpiredAbsolute,
        // Any status a newer rotation crate adds is, at least, not active.
        _ => TokenStatus::ExpiredIdle,
    }
}

fn access_status(rec: &AccessStatus, now: u64) -> TokenStatus {
    match rec.revoked {
        Some(reason) => TokenStatus::Revoked(reason),
        None if now >= rec.deadline => TokenStatus::ExpiredAbsolute,
        None => TokenStatus::Active,
    }
}

/// An active token's introspection, from its opened body: `exp` is the earlier deadline.
fn active(
    body: RecordBody,
    token_type: TokenKind,
    issued_ms: u64,
    absolute: Expiry,
    idle: Option<Expiry>,
    (family, cnf): (Option<FamilyId>, Option<Confirmation>),
    now: u64,
) -> Introspection {
    let exp_ms = idle.map_or(absolute.at_ms, |i| i.at_ms.min(absolute.at_ms));
    Introspection {
        status: TokenStatus::Active,
        claims: Some(TokenClaims {
            sub: body.subject,
            client_id: body.client_id,
            scope: body.scope,
            token_type,
            exp: exp_ms / 1000,
            exp_ms,
            iat: issued_ms / 1000,
            iat_ms: issued_ms,
            expires_in: exp_ms.saturating_sub(now) / 1000,
            absolute,
            idle,
            extra: body.claims,
            family,
            cnf,
        }),
    }
}

/// A refresh token looked up: its family, if the token is one of it, and its status.
pub(super) struct RefreshFound {
    pub(super) presentation: Presentation,
    pub(super) family: FamilyRecord,
    pub(super) status: TokenStatus,
}

impl TokenDb {
    /// Finds a refresh token's family and classifies the token in it. `None` for a token this
    /// database did not issue (checked by its tag before any read), a family that is gone, or
    /// a generation the family does not know.
    pub(super) fn lookup_refresh(
        &self,
        t: &RefreshToken,
        now: u64,
    ) -> Result<Option<RefreshFound>> {
        let Some(presentation) = Presentation::verify(t, self.hashing()) else {
            return Ok(None);
        };
        let Some(family) = self.backend().family(&presentation.family())? else {
            return Ok(None);
        };
        Ok(match classify(&family, &presentation, now) {
            Standing::Known { status, current } => Some(RefreshFound {
                presentation,
                status: match status {
                    Status::Active if !current => TokenStatus::Rotated,
                    s => status_of(s),
                },
                family,
            }),
            _ => None,
        })
    }

    /// Whether a token is active, and if not, why. One point read; no decryption. An expired
    /// token is refused even if the sweeper has not deleted it yet.
    ///
    /// # Errors
    /// [`crate::Error::Malformed`] (no disk access), storage errors, [`StoreError::Corrupt`] for
    /// a damaged record.
    pub fn validate(&self, token: &str) -> Result<Validation> {
        let op = LookupOp::start(Lookup::Validate);
        let answer = self.validate_untraced(token);
        op.finish(
            &self.inner.lookups,
            match &answer {
                Ok(v) => status_label(v.status),
                Err(e) => e.label(),
            },
        );
        answer
    }

    fn validate_untraced(&self, token: &str) -> Result<Validation> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        Ok(match &parsed {
            ParsedToken::Access(t) => {
                let id = self.hashing().access_key(t);
                match self.backend().token_status(&id, false)? {
                    None => Validation::unknown(TokenKind::Access),
                    Some(rec) => Validation {
                        kind: TokenKind::Access,
                        status: access_status(&rec, now),
                        expires: Some(Expiry::new(rec.deadline, now)),
                        absolute: Some(Expiry::new(rec.deadline, now)),
                        idle: None,
                        family: rec.family,
                        confirmation: rec.confirmation,
                    },
                }
            }
            ParsedToken::Refresh(t) => match self.lookup_refresh(t, now)? {
                None => Validation::unknown(TokenKind::Refresh),
                Some(found) => {
                    let rec = &found.family;
                    Validation {
                        kind: TokenKind::Refresh,
                        status: found.status,
                        expires: Some(Expiry::new(rec.deadline(), now)),
                        absolute: Some(Expiry::new(rec.absolute_deadline, now)),
                        idle: Some(Expiry::new(rec.idle_deadline, now)),
                        family: Some(t.family),
                        confirmation: rec.confirmation,
                    }
                }
            },
        })
    }

    /// RFC 7662 introspection: the token's status and, when active, its claims (this opens the
    /// sealed body).
    ///
    /// # Errors
    /// As [`TokenDb::validate`].
    pub fn introspect(&self, token: &str) -> Result<Introspection> {
        let op = LookupOp::start(Lookup::Introspect);
        let answer = self.introspect_untraced(token);
        op.finish(
            &self.inner.lookups,
            match &answer {
                Ok(i) => status_label(i.status),
                Err(e) => e.label(),
            },
        );
        answer
    }

    fn introspect_untraced(&self, token: &str) -> Result<Introspection> {
        let parsed = self.parse(token)?;
        self.check_open()?;
        let now = self.now();
        match &parsed {
            ParsedToken::Access(t) => {
                let id = self.hashing().access_key(t);
                // The body is opened only for an active token, where the backend reads it.
                let is_active = |rec: &AccessStatus| access_status(rec, now) == TokenStatus::Active;
                let Some((rec, body)) = self.backend().token_opened(&id, &is_active)? else {
                    return Ok(Introspection::inactive(TokenStatus::Unknown));
                };
                // The answer is decided here from the authenticated status, whatever the
                // backend made of `is_active`.
                let status = access_status(&rec, now);
                if status != TokenStatus::Active {
                    return Ok(Introspection::inactive(status));
                }
                let body = body.ok_or(StoreError::Failed(Failure::Internal(
                    "the backend did not open an active token's body",
                )))?;
                Ok(active(
                    body,
                    TokenKind::Access,
                    rec.issued_at,
                    Expiry::new(rec.deadline, now),
                    None,
                    (rec.family, rec.confirmation),
                    now,
                ))
            }
            ParsedToken::Refresh(t) => {
                let Some(found) = self.lookup_refresh(t, now)? else {
                    return Ok(Introspection::inactive(TokenStatus::Unknown));
                };
                if found.status != TokenStatus::Active {
                    return Ok(Introspection::inactive(found.status));
                }
                let rec = &found.family;
                let body = rec
                    .open_body(&t.family, &self.keys())
                    .map_err(StoreError::Corrupt)?;
                Ok(active(
                    body,
                    TokenKind::Refresh,
                    rec.rotated_at,
                    Expiry::new(rec.absolute_deadline, now),
                    Some(Expiry::new(rec.idle_deadline, now)),
                    (Some(t.family), rec.confirmation),
                    now,
                ))
            }
        }
    }
}
