//! [`AsyncTokenDb`]: the same database from an async runtime, without blocking its threads.

use crate::TokenDb;
use crate::error::{Error, Result};
use crate::types::{
    Grant, Introspection, IssuedAccess, IssuedRefresh, Refreshed, Revoked, Rotated, Validation,
};
use tokendb_backend::Pending;
use tokendb_core::{Confirmation, FamilyId, Scope};

/// A [`TokenDb`] for async code (axum, tonic, actix): every write returns a [`Pending`] future
/// that the backend completes when the write is durable — the redb backend from its writer
/// thread — so no runtime thread is parked and no `spawn_blocking` is needed.
///
/// - **A write is submitted when the method is called**, not when the future is first polled.
///   Dropping the future does not cancel it: the write is applied atomically and durably
///   whether or not anyone awaits the answer, and its events (reuse detected, family revoked)
///   are emitted either way. A write never happens half: a dropped rotation has rotated, or
///   (if it was refused) changed nothing.
/// - **Lookups run inline on a file** (`validate`, `introspect`): a point read of a cached
///   snapshot and a MAC check, a few microseconds, that never waits for a writer or a lock held
///   across I/O (redb readers do not block on the writer). Only a cold page read from disk can
///   take longer, as any memory-mapped read can. **On PostgreSQL** a lookup is a network round
///   trip, so it runs on one of the backend's lookup threads and the future is woken with its
///   answer: no executor thread waits on the network.
/// - **Any executor.** The futures need no runtime of their own: the completing thread wakes
///   them through the `Waker` they were polled with. Tested on tokio's multi-thread runtime and
///   on the hand-rolled executor behind [`Pending::wait`].
/// - Operator calls (`stats`, `verify`, `compact`, `backup`, re-keying, `sweep_now`) stay on
///   [`TokenDb`]: they scan or rewrite in bulk, so call them through `spawn_blocking`.
///
/// ```
/// use tokendb::{Config, Grant, MasterKey, TokenDb};
///
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let db = TokenDb::create(dir.path().join("t.tdb"), &MasterKey::generate(), Config::default())?;
/// let db = db.asynchronous(); // cheap: share it with every handler
///
/// let grant = Grant::new("alice", "web-app", "openid offline_access")?;
/// let refresh = db.issue_refresh(&grant).await?;
/// let next = db.rotate(refresh.token.expose(), "web-app", None).await?;
/// assert!(db.validate(next.token.expose()).await?.is_active());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AsyncTokenDb {
    db: TokenDb,
}

impl TokenDb {
    /// This database's async face (a clone of the handle: cheap).
    #[must_use]
    pub fn asynchronous(&self) -> AsyncTokenDb {
        AsyncTokenDb { db: self.clone() }
    }
}

impl AsyncTokenDb {
    /// The synchronous handle, for operator calls.
    #[must_use]
    pub fn sync(&self) -> &TokenDb {
        &self.db
    }

    /// [`TokenDb::issue_refresh`].
    pub fn issue_refresh(&self, grant: &Grant) -> Pending<IssuedRefresh, Error> {
        self.db.start_issue_refresh(grant)
    }

    /// [`TokenDb::issue_access`].
    pub fn issue_access(&self, grant: &Grant) -> Pending<IssuedAccess, Error> {
        self.db.start_issue_access(grant)
    }

    /// [`TokenDb::issue_access_batch`].
    pub fn issue_access_batch(&self, grants: &[Grant]) -> Pending<Vec<IssuedAccess>, Error> {
        self.db.start_issue_access_batch(grants)
    }

    /// [`TokenDb::issue_access_for_family`] (the family is read inline, as a lookup).
    pub fn issue_access_for_family(
        &self,
        family: FamilyId,
        scope: Option<&Scope>,
    ) -> Pending<IssuedAccess, Error> {
        self.db.start_issue_access_for_family(family, scope)
    }

    /// [`TokenDb::rotate`].
    pub fn rotate(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Pending<Rotated, Error> {
        self.db
            .start_rotate(token, client_id, requested_scope, None)
    }

    /// [`TokenDb::rotate_confirmed`].
    pub fn rotate_confirmed(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Pending<Rotated, Error> {
        self.db
            .start_rotate(token, client_id, requested_scope, proven)
    }

    /// [`TokenDb::refresh`]: the whole `refresh_token` grant in one durable write.
    pub fn refresh(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
    ) -> Pending<Refreshed, Error> {
        self.db
            .start_refresh(token, client_id, requested_scope, None)
    }

    /// [`TokenDb::refresh_confirmed`]: the refresh grant of a sender-constrained client.
    pub fn refresh_confirmed(
        &self,
        token: &str,
        client_id: &str,
        requested_scope: Option<&Scope>,
        proven: Option<&Confirmation>,
    ) -> Pending<Refreshed, Error> {
        self.db
            .start_refresh(token, client_id, requested_scope, proven)
    }

    /// [`TokenDb::remember_proof`]: the replay cache of DPoP proofs.
    pub fn remember_proof(
        &self,
        key: &Confirmation,
        jti: &str,
        until_ms: u64,
    ) -> Pending<bool, Error> {
        self.db.start_remember_proof(key, jti, until_ms)
    }

    /// [`TokenDb::revoke`] (an unknown or revoked token is answered inline, without a write).
    pub fn revoke(&self, token: &str) -> Pending<Revoked, Error> {
        self.db.start_revoke(token)
    }

    /// [`TokenDb::revoke_family`].
    pub fn revoke_family(&self, family: FamilyId) -> Pending<Revoked, Error> {
        self.db.start_revoke_family(family)
    }

    /// [`TokenDb::revoke_subject`].
    pub fn revoke_subject(
        &self,
        subject: &str,
        client_id: Option<&str>,
    ) -> Pending<Revoked, Error> {
        self.db.start_revoke_subject(subject, client_id)
    }

    /// [`TokenDb::revoke_client`].
    pub fn revoke_client(&self, client_id: &str) -> Pending<Revoked, Error> {
        self.db.start_revoke_client(client_id)
    }

    /// [`TokenDb::now_ms`].
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.db.now_ms()
    }

    /// [`TokenDb::validate`]: inline on a file; on PostgreSQL on one of the backend's lookup
    /// threads, so that the round trip does not block the executor.
    ///
    /// # Errors
    /// As [`TokenDb::validate`].
    pub async fn validate(&self, token: &str) -> Result<Validation> {
        self.lookup(token, TokenDb::validate).await
    }

    /// [`TokenDb::introspect`], inline or on a lookup thread as [`AsyncTokenDb::validate`].
    ///
    /// # Errors
    /// As [`TokenDb::introspect`].
    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        self.lookup(token, TokenDb::introspect).await
    }

    /// Runs `f` inline, or on the backend's lookup threads if it offers them.
    async fn lookup<T: Send + 'static>(
        &self,
        token: &str,
        f: fn(&TokenDb, &str) -> Result<T>,
    ) -> Result<T> {
        let (done, pending) = Pending::<Result<T>>::channel();
        let db = self.db.clone();
        let token = zeroize::Zeroizing::new(token.to_owned()); // a bearer credential: wiped after use
        let job: tokendb_backend::Lookup =
            Box::new(move || done.complete(Ok(f(&db, token.as_str()))));
        match self.db.offload(job) {
            Ok(()) => match pending.await {
                Ok(answer) => answer,
                Err(e) => Err(Error::Store(e)),
            },
            Err(job) => {
                job();
                match pending.await {
                    Ok(answer) => answer,
                    Err(e) => Err(Error::Store(e)),
                }
            }
        }
    }
}
