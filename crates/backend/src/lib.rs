//! # tokendb-backend
//!
//! The seam between tokendb's engine and its storage: the [`Backend`] trait, whose operations
//! are typed end to end (a rotation returns a [`Rotation`], a revocation a [`Revocation`]), and
//! the one error type every backend returns ([`StoreError`]).
//!
//! The engine (the `tokendb` crate) parses tokens, hashes secrets, seals bodies and asks
//! `tokendb-rotation` every question of policy; a backend stores and retrieves the sealed,
//! MAC'd records it is given, keeps their indexes, and applies each operation atomically and
//! durably. Where an operation must decide on the state it reads inside its transaction (a
//! rotation, an access token joining a family, the family cap), the backend calls the pure
//! function of `tokendb-rotation` for it ([`tokendb_rotation::plan`],
//! [`tokendb_rotation::admit_access`], [`tokendb_rotation::cap_decision`]) and applies the
//! answer; it never decides anything itself.
//!
//! Backends: `tokendb-store` (one redb file, group-committed) and, arriving,
//! `tokendb-postgres` (shared by several server replicas). `docs/architecture.md` ("The storage
//! interface") lists what a backend must guarantee and what it never sees.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod error;
mod pending;

pub use error::{EngineError, Failure, Result, StoreError};
pub use pending::{Done, Pending, Timing};

use std::sync::Arc;
use tokendb_core::{
    AccessKey, AccessRecord, AccessStatus, FamilyId, FamilyRecord, IndexHash, KeyId, KeyRing,
    MasterKey, ProofId, RecordBody, RevokeReason,
};
use tokendb_rotation::{FamilyCap, Refusal, RotateRequest, Rotation};

/// Most access tokens one [`Backend::issue_access_batch`] may carry. The redb backend's writer
/// thread applies a batch while every other write waits for it: on the benchmark machine a call
/// of 10,000 took ~0.2 s end to end (sealing, apply, commit) and holds a few megabytes of
/// records; 1,000 per call loaded at half the rate (`docs/benchmarks.md`, "Bulk load").
pub const MAX_ACCESS_BATCH: usize = 10_000;

/// What issuing a new family did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FamilyIssue {
    /// Stored. The cap revoked these families (oldest first) to make room.
    Issued {
        /// Families revoked by the cap.
        evicted: Vec<FamilyId>,
    },
    /// Refused by the family cap; nothing changed.
    CapReached {
        /// The cap.
        limit: u32,
    },
}

/// What issuing an access token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessIssue {
    /// Stored.
    Issued,
    /// The token names a family that does not exist (or was swept).
    FamilyNotFound,
    /// The token's family refused it ([`tokendb_rotation::admit_access`]); nothing changed.
    Refused(Refusal),
}

/// What a revocation changed: only what it newly revoked is counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Revocation {
    /// Families newly revoked.
    pub families: u64,
    /// Access tokens newly revoked.
    pub tokens: u64,
    /// Ids of the families newly revoked.
    pub family_ids: Vec<FamilyId>,
}

impl Revocation {
    /// Adds another revocation's counts to this one.
    pub fn absorb(&mut self, other: Self) {
        self.families += other.families;
        self.tokens += other.tokens;
        self.family_ids.extend(other.family_ids);
    }
}

/// Counts of one sweep batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepCounts {
    /// Index entries examined.
    pub examined: u64,
    /// Families deleted.
    pub families: u64,
    /// Access tokens deleted.
    pub tokens: u64,
    /// Entries re-filed at a later deadline because their record lives longer.
    pub refiled: u64,
    /// Grace slots erased.
    pub grace_erased: u64,
    /// Entries whose record failed authentication: the entry is dropped, the record kept for
    /// `verify` to report.
    pub corrupt: u64,
    /// Deadline of the oldest entry examined (for lag), if any.
    pub oldest_deadline: Option<u64>,
    /// Token-index entries dropped with their ended deadline bucket.
    pub index_dropped: u64,
    /// Proofs deleted from the replay cache ([`Backend::remember_proof`]).
    pub proofs: u64,
    /// Whether entries with deadline ≤ now remain after this batch.
    pub more: bool,
}

/// Where a data-key re-seal pass stands: records are visited in key order, families first, so
/// each batch starts where the previous one stopped instead of rescanning from the start.
/// Start with `ResealCursor::default()`, then pass the cursor the previous batch returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResealCursor {
    /// The last family visited.
    pub family: Option<FamilyId>,
    /// The last access token visited.
    pub token: Option<AccessKey>,
    /// Whether every family was visited.
    pub families_done: bool,
}

/// One batch of a data-key re-seal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResealBatch {
    /// Records moved to the current sealing key.
    pub records: u64,
    /// Records skipped because they fail authentication (`verify` names them); they keep their
    /// old key, which therefore cannot be retired.
    pub corrupt: u64,
    /// Whether records under older keys may remain past the cursor.
    pub more: bool,
    /// Where the next batch starts.
    pub cursor: ResealCursor,
}

impl ResealBatch {
    /// A batch's result. For backend implementations.
    #[must_use]
    pub fn new(records: u64, corrupt: u64, more: bool, cursor: ResealCursor) -> Self {
        Self {
            records,
            corrupt,
            more,
            cursor,
        }
    }
}

/// A lookup handed to [`Backend::offload`].
pub type Lookup = Box<dyn FnOnce() + Send + 'static>;

/// The storage interface of tokendb's engine.
///
/// Every method is called from the engine's threads (request handlers, the sweeper) and must be
/// safe to call concurrently. The contract, for every implementation:
///
/// - **Durable on `Ok`.** A write answered `Ok` survives a crash or power loss of any
///   process and machine involved; one that returned an error may or may not have happened only
///   where the method says so (a lost connection after commit), and then never twice.
/// - **Atomic.** Each write method is one transaction: all of its changes, or none. A
///   rotation's read of the family, its decision and its write are one step per family: two
///   rotations of one family, from any process, are serialised, so a token has at most one
///   successor.
/// - **Read your writes, and everyone else's.** A lookup that starts after a write returned
///   (from any handle on the same data) sees it. Revocation relies on this.
/// - **Authenticated reads.** Records are decoded with `tokendb-core`'s codec under the key ring
///   ([`Backend::keys`]), so an altered byte reads as [`StoreError::Corrupt`], never as other
///   data.
/// - **No decisions.** Where a write depends on the state it reads, the backend calls the
///   `tokendb-rotation` function named on the method and applies its answer.
///
/// A backend never sees a token, nor a subject, client id, scope or claim in clear: tokens
/// reach it as keyed hashes ([`tokendb_core::TokenId`], [`AccessKey`]), people and clients as
/// keyed [`IndexHash`]es, and everything else sealed. The one secret it handles is a rotation's
/// successor, inside [`RotateRequest`], which it passes to [`tokendb_rotation::plan`] to seal into
/// the grace slot; it is zeroized on drop.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Where the data lives, for messages (a file path, a database URL without password).
    fn location(&self) -> String;

    /// The data keys, unwrapped at open. Replaced (a new `Arc`) when a sealing key is added or
    /// retired.
    fn keys(&self) -> Arc<KeyRing>;

    /// The clock that decides deadlines when the application did not set one, if this backend
    /// has its own: a database shared by several replicas offers the database server's, so
    /// replicas whose clocks differ still agree on what has expired. `None` (the default): the
    /// system clock.
    fn clock(&self) -> Option<Arc<dyn tokendb_core::time::Clock>> {
        None
    }

    /// Runs `job` (a lookup and what the engine does with its answer) on a thread of this
    /// backend's own, if its lookups wait on I/O that an async caller must not block its
    /// executor on (a network round trip): then `Ok(())`, and `job` runs soon. Backends whose
    /// lookups are memory reads (the redb file) return `Err(job)` — the default — and the caller
    /// runs it inline.
    ///
    /// # Errors
    /// The job back, to run inline.
    fn offload(&self, job: Lookup) -> std::result::Result<(), Lookup> {
        Err(job)
    }

    // ---- lookups: one committed snapshot each ----

    /// Reads and authenticates a family record.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the stored bytes fail authentication; storage errors.
    fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>>;

    /// Reads and authenticates an access token record in full (both MACs).
    ///
    /// # Errors
    /// As [`Backend::family`].
    fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>>;

    /// Reads an access token's status, authenticated by its status MAC only: what a validation
    /// needs. With `with_body`, the sealed body comes too, for an introspection to open.
    ///
    /// # Errors
    /// As [`Backend::family`].
    fn token_status(&self, key: &AccessKey, with_body: bool) -> Result<Option<AccessStatus>>;

    /// Reads an access token for an introspection: its status, authenticated as by
    /// [`Backend::token_status`], and — when `open` answers yes for that status — its body,
    /// opened (the returned status holds no sealed body). The default reads the sealed body
    /// with `token_status` and opens it under [`Backend::keys`]; a backend can instead open it
    /// where it reads it ([`AccessRecord::decode_status_and_open`]), without copying it.
    ///
    /// # Errors
    /// As [`Backend::family`]; [`StoreError::Corrupt`] if the body does not open.
    fn token_opened(
        &self,
        key: &AccessKey,
        open: &dyn Fn(&AccessStatus) -> bool,
    ) -> Result<Option<(AccessStatus, Option<RecordBody>)>> {
        let Some(status) = self.token_status(key, true)? else {
            return Ok(None);
        };
        let body = match open(&status) {
            true => Some(
                status
                    .open_body(key, &self.keys())
                    .map_err(StoreError::Corrupt)?,
            ),
            false => None,
        };
        Ok(Some((
            AccessStatus {
                body: Vec::new(),
                ..status
            },
            body,
        )))
    }

    /// The earliest deadline anything is filed under, if any: a sweeper that finds it in the
    /// future skips its pass without a write.
    ///
    /// # Errors
    /// Storage errors.
    fn earliest_deadline(&self) -> Result<Option<u64>>;

    // ---- writes: atomic, durable on `Ok` ----
    //
    // Each takes the operation and a `Done` to answer it with, exactly once, when the write is
    // durable (or refused, or failed); none blocks its caller on the write. The caller waits
    // through the `Done`'s `Pending`, on a thread or on any async executor.

    /// Stores a new family, subject to `cap` over the live families of its (subject, client),
    /// decided by [`tokendb_rotation::cap_decision`]; evicted families are revoked (reason
    /// `Evicted`) with their access tokens in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if the id is taken (a 2^-128 event) or the record does not
    /// encode; storage errors.
    fn issue_family(
        &self,
        id: FamilyId,
        record: FamilyRecord,
        cap: Option<FamilyCap>,
        now: u64,
        done: Done<FamilyIssue>,
    );

    /// Stores a new access token. If it names a family, [`tokendb_rotation::admit_access`]
    /// decides against the family as read in the transaction.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if the key is taken or the token would outlive its family;
    /// storage errors.
    fn issue_access(&self, key: AccessKey, record: AccessRecord, now: u64, done: Done<AccessIssue>);

    /// Stores many standalone access tokens in one transaction, all or none. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] (nothing stored) if one is tied to a family, a key is taken or
    /// repeated, or a record does not encode; storage errors.
    fn issue_access_batch(&self, tokens: Vec<(AccessKey, AccessRecord)>, now: u64, done: Done<u64>);

    /// Presents a refresh token for rotation: reads its family, asks
    /// [`tokendb_rotation::plan`], and applies the plan, all in one transaction serialised per
    /// family. A missing family is [`Rotation::Refused`] with `Refusal::Unknown`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a damaged family record; storage errors.
    fn rotate(&self, request: RotateRequest, now: u64, done: Done<Rotation>);

    /// Revokes one access token (reason `Requested`). `None` if there is no such token.
    ///
    /// # Errors
    /// Storage errors; [`StoreError::Corrupt`] for a damaged record.
    fn revoke_token(&self, key: AccessKey, now: u64, done: Done<Option<Revocation>>);

    /// Revokes a family with every access token tied to it. `None` if there is no such family.
    ///
    /// # Errors
    /// As [`Backend::revoke_token`].
    fn revoke_family(
        &self,
        id: FamilyId,
        reason: RevokeReason,
        now: u64,
        done: Done<Option<Revocation>>,
    );

    /// Revokes every family and standalone access token of a subject, only those of one client
    /// if `client` is given (reason `Subject`).
    ///
    /// # Errors
    /// As [`Backend::revoke_token`].
    fn revoke_subject(
        &self,
        subject: IndexHash,
        client: Option<IndexHash>,
        now: u64,
        done: Done<Revocation>,
    );

    /// Revokes every family and standalone access token of a client (reason `Client`).
    ///
    /// # Errors
    /// As [`Backend::revoke_token`].
    fn revoke_client(&self, client: IndexHash, now: u64, done: Done<Revocation>);

    /// Deletes what expired at `now`, examining at most about `limit` entries, in one
    /// transaction. A record whose deadline moved later is re-filed, never deleted.
    ///
    /// # Errors
    /// Storage errors.
    fn sweep(&self, limit: usize, now: u64, done: Done<SweepCounts>);

    /// The replay cache of proofs of possession (RFC 9449 §11.1: a DPoP proof's `jti` is
    /// accepted once): answers `true` if proof `id` was new, and remembers it until `deadline`;
    /// `false` if it was seen before and its deadline is still after `now`, changing nothing.
    ///
    /// - `id` is a keyed hash ([`KeyRing::proof_id`]) of the key's thumbprint and the proof's
    ///   `jti`; the backend stores it as an opaque 32-byte key, never anything else of the proof.
    /// - Atomic per id and serialised across every process sharing the data: of concurrent
    ///   calls with one id, exactly one is answered `true`.
    /// - Durable on `Ok(true)`, like every write: a proof accepted before a crash or a restart is
    ///   refused after it.
    /// - An entry whose deadline is at or before `now` counts as absent: it is replaced (the
    ///   answer is `true`), and [`Backend::sweep`] deletes it (counted in
    ///   [`SweepCounts::proofs`]). A `deadline` at or before `now` is answered `true` and need
    ///   not be stored.
    /// - No decision is delegated to `tokendb-rotation`: the caller (`tokendb-oauth`) has
    ///   verified the proof and chosen `deadline`, the end of its acceptance window.
    ///
    /// # Errors
    /// Storage errors (the proof must then be refused: it may or may not have been stored).
    fn remember_proof(&self, id: ProofId, deadline: u64, now: u64, done: Done<bool>);

    /// Re-seals up to `limit` records still under a sealing key other than the current one,
    /// starting at `from`.
    ///
    /// # Errors
    /// Storage errors.
    fn reseal(&self, limit: usize, from: ResealCursor, now: u64, done: Done<ResealBatch>);

    // ---- keys ----

    /// Re-wraps the data keys under `new`; `current` must open them. No record is rewritten.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `current` is not the key in use.
    fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()>;

    /// Adds a sealing key, makes it current for new records, and returns its id.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`] if `master` is not the key in use.
    fn add_sealing_key(&self, master: &MasterKey) -> Result<KeyId>;

    /// Drops every sealing key but the current one, once no record uses them; returns them.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if a record still uses an older key; as
    /// [`Backend::add_sealing_key`].
    fn retire_old_sealing_keys(&self, master: &MasterKey) -> Result<Vec<KeyId>>;

    // ---- state ----

    /// Write transactions committed through this handle since it opened: with the number of
    /// operations, it shows how well writes are batched, and that a refusal wrote nothing.
    fn commits(&self) -> u64;

    /// Why the handle is failed, if it is.
    fn failure(&self) -> Option<Failure>;

    /// Marks the handle failed: every later operation returns [`StoreError::Failed`].
    fn mark_failed(&self, why: Failure);

    /// Finishes queued writes and closes. Later calls return [`StoreError::Closed`]. Closing
    /// twice is fine.
    ///
    /// # Errors
    /// Storage errors from the final close.
    fn close(&self) -> Result<()>;
}
