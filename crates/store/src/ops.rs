//! Write operations, applied inside one redb write transaction. One file per kind of
//! operation (`issue`, `rotate`, `revoke`, `sweep`, `reseal`, `proof`); this one holds what they share:
//! the operation and outcome types, the open tables and record access.
//!
//! Every operation reads and decides first, and mutates only once nothing can refuse any more;
//! a failure during the mutations is a storage error, which fails the whole batch. So one
//! operation's refusal never leaves half a change behind and never aborts its neighbours. The
//! one check made during the mutations is a token key collision (an insert that replaced a
//! record): it fails the op with `Invalid`, and the writer then aborts the transaction and
//! applies the batch again without that op, so nothing of it stays.

use crate::error::{Failure, RedbResult, Result, StoreError};
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, Entry, FAMILIES, FAMILY_TOKENS,
    FT_KEY_LEN, IX_KEY_LEN, PROOFS, RECENT_LEN, RECENT_TOKENS, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN,
    access_keys_from, bucket, dl_key, dl_parse, dl_upto, ft_key, ft_range, ft_token, ix_key,
    ix_parse, ix_range, recent_parse, recent_value, tokens_after, tx_bucket_start, tx_key,
    tx_parse, tx_range,
};
use redb::{ReadableTable, Table, WriteTransaction};
use tokendb_backend::{MAX_ACCESS_BATCH, ResealBatch, ResealCursor, Revocation, SweepCounts};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN, PROOF_ID_LEN};
use tokendb_core::{
    AccessKey, AccessRecord, CoreError, FamilyId, FamilyRecord, IndexHash, KeyRing, ProofId,
    RecordState, RevokeReason,
};
use tokendb_rotation::{
    Admission, CapAction, FamilyCap, Plan, Refusal, RotateRequest, Rotation, admit_access,
    cap_decision, plan,
};

mod issue;
mod proof;
mod reseal;
mod revoke;
mod rotate;
mod sweep;

use crate::unwind::LeakOnUnwind;
pub(crate) use reseal::key_id_of;

/// One write operation.
#[derive(Debug)]
pub(crate) enum Op {
    /// Store a new family (and, optionally, an access token tied to it), subject to the cap.
    IssueFamily {
        /// New family id.
        id: FamilyId,
        /// Its record (deadlines, current token hash, sealed body).
        record: Box<FamilyRecord>,
        /// Per-(subject, client) cap.
        cap: Option<FamilyCap>,
    },
    /// Store a new access token. If it names a family, the family must be active and must not
    /// end before the token (the caller caps the token's deadline at the family's, which only
    /// moves forward, before minting it).
    IssueAccess {
        /// Where it is stored (its deadline and token id).
        key: AccessKey,
        /// Its record. Standalone tokens (no family) are also indexed by subject and client.
        record: Box<AccessRecord>,
    },
    /// Store many new standalone access tokens, all or none: the op fails as a whole (and
    /// writes nothing) if any of them is tied to a family, collides with a stored key or does
    /// not encode, or if there are more than [`MAX_ACCESS_BATCH`]. Each table's entries are
    /// inserted in key order, so the B-tree takes them leaf after leaf.
    IssueAccessBatch {
        /// Where each token is stored (its deadline and token id), and its record.
        tokens: Vec<(AccessKey, AccessRecord)>,
    },
    /// Present a refresh token for rotation.
    Rotate(Box<RotateRequest>),
    /// Revoke one access token.
    RevokeToken {
        /// Where it is stored.
        key: AccessKey,
    },
    /// Revoke a family, its refresh token and every access token tied to it.
    RevokeFamily {
        /// The family.
        id: FamilyId,
        /// Why.
        reason: RevokeReason,
    },
    /// Revoke everything of a subject (optionally only with one client).
    RevokeSubject {
        /// Subject hash.
        subject: IndexHash,
        /// Client hash filter.
        client: Option<IndexHash>,
    },
    /// Revoke everything of a client.
    RevokeClient {
        /// Client hash.
        client: IndexHash,
    },
    /// Delete up to `limit` expired index entries' records.
    Sweep {
        /// Most deadline entries to process.
        limit: usize,
    },
    /// Remember a proof in the replay cache until `deadline`, unless it is there already.
    RememberProof {
        /// Its id.
        id: ProofId,
        /// When it may be forgotten, Unix ms.
        deadline: u64,
    },
    /// Re-seal up to `limit` records still under a key other than the current sealing key.
    Reseal {
        /// Most records to re-seal.
        limit: usize,
        /// Where to start: `ResealCursor::default()` for the first batch, then the cursor the
        /// previous batch returned.
        from: ResealCursor,
    },
}

/// What an operation did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Issued; these families were evicted by the cap to make room.
    Issued {
        /// Evicted families.
        evicted: Vec<FamilyId>,
    },
    /// A batch of access tokens was issued, every one of it.
    IssuedBatch {
        /// Tokens stored.
        tokens: u64,
    },
    /// Issue refused by the family cap.
    CapReached {
        /// The cap.
        limit: u32,
    },
    /// A rotation request's answer.
    Rotation(Rotation),
    /// Issue of an access token refused by its family.
    Refused(Refusal),
    /// Families and tokens newly revoked.
    Revoked(Revocation),
    /// The named record does not exist.
    NotFound,
    /// A sweep batch.
    Swept(SweepCounts),
    /// A re-seal batch.
    Resealed(ResealBatch),
    /// Whether a proof was new (and is now remembered).
    Remembered(bool),
}

type FamT<'t> = Table<'t, &'static [u8; FAMILY_ID_LEN], &'static [u8]>;
type TokT<'t> = Table<'t, &'static [u8; ACCESS_KEY_LEN], &'static [u8]>;
type FtT<'t> = Table<'t, &'static [u8; FT_KEY_LEN], ()>;
type DlT<'t> = Table<'t, &'static [u8; DL_KEY_LEN], ()>;
type IxT<'t> = Table<'t, &'static [u8; IX_KEY_LEN], ()>;
type TxT<'t> = Table<'t, &'static [u8; TX_KEY_LEN], ()>;
type RcT<'t> = Table<'t, &'static [u8; ACCESS_KEY_LEN], &'static [u8; RECENT_LEN]>;
type PrT<'t> = Table<'t, &'static [u8; PROOF_ID_LEN], u64>;

/// The tables of one write transaction, opened once per batch.
pub(crate) struct Tx<'t> {
    families: FamT<'t>,
    tokens: TokT<'t>,
    family_tokens: FtT<'t>,
    deadlines: DlT<'t>,
    by_subject: IxT<'t>,
    by_client: IxT<'t>,
    subject_tokens: TxT<'t>,
    client_tokens: TxT<'t>,
    recent_tokens: RcT<'t>,
    proofs: PrT<'t>,
    keys: &'t KeyRing,
}

fn corrupt(e: CoreError) -> StoreError {
    StoreError::Corrupt(e)
}

impl<'t> Tx<'t> {
    /// Opens every table. If opening one panics (redb on a damaged file), the tables opened
    /// before it are leaked rather than dropped while unwinding: their `Drop` touches the same
    /// damaged state and can panic again, which aborts the process (the writer then leaks the
    /// transaction and marks the database failed). On an ordinary error they are dropped, so
    /// the transaction ends and releases redb's write slot.
    pub(crate) fn open(txn: &'t WriteTransaction, keys: &'t KeyRing) -> Result<Self> {
        let families = LeakOnUnwind::new(txn.open_table(FAMILIES).db()?);
        let tokens = LeakOnUnwind::new(txn.open_table(TOKENS).db()?);
        let family_tokens = LeakOnUnwind::new(txn.open_table(FAMILY_TOKENS).db()?);
        let deadlines = LeakOnUnwind::new(txn.open_table(DEADLINES).db()?);
        let by_subject = LeakOnUnwind::new(txn.open_table(BY_SUBJECT).db()?);
        let by_client = LeakOnUnwind::new(txn.open_table(BY_CLIENT).db()?);
        let subject_tokens = LeakOnUnwind::new(txn.open_table(SUBJECT_TOKENS).db()?);
        let client_tokens = LeakOnUnwind::new(txn.open_table(CLIENT_TOKENS).db()?);
        let recent_tokens = LeakOnUnwind::new(txn.open_table(RECENT_TOKENS).db()?);
        let proofs = LeakOnUnwind::new(txn.open_table(PROOFS).db()?);
        let (
            Some(families),
            Some(tokens),
            Some(family_tokens),
            Some(deadlines),
            Some(by_subject),
            Some(by_client),
            Some(subject_tokens),
            Some(client_tokens),
            Some(recent_tokens),
            Some(proofs),
        ) = (
            families.take(),
            tokens.take(),
            family_tokens.take(),
            deadlines.take(),
            by_subject.take(),
            by_client.take(),
            subject_tokens.take(),
            client_tokens.take(),
            recent_tokens.take(),
            proofs.take(),
        )
        else {
            return Err(StoreError::Failed(Failure::Internal(
                "a table was not opened",
            )));
        };
        Ok(Self {
            families,
            tokens,
            family_tokens,
            deadlines,
            by_subject,
            by_client,
            subject_tokens,
            client_tokens,
            recent_tokens,
            proofs,
            keys,
        })
    }

    pub(crate) fn apply(&mut self, op: &Op, now: u64) -> Result<Outcome> {
        match op {
            Op::IssueFamily { id, record, cap } => self.issue_family(*id, record, *cap, now),
            Op::IssueAccess { key, record } => self.issue_access(*key, record),
            Op::IssueAccessBatch { tokens } => self.issue_access_batch(tokens),
            Op::Rotate(r) => self.rotate(r, now),
            Op::RevokeToken { key } => Ok(self
                .revoke_token(key, RevokeReason::Requested, now)?
                .map_or(Outcome::NotFound, Outcome::Revoked)),
            Op::RevokeFamily { id, reason } => Ok(self
                .revoke_family(id, *reason, now)?
                .map_or(Outcome::NotFound, Outcome::Revoked)),
            Op::RevokeSubject { subject, client } => {
                self.revoke_indexed(true, subject, *client, now)
            }
            Op::RevokeClient { client } => self.revoke_indexed(false, client, None, now),
            Op::Sweep { limit } => self.sweep(*limit, now).map(Outcome::Swept),
            Op::Reseal { limit, from } => self.reseal(*limit, from).map(Outcome::Resealed),
            Op::RememberProof { id, deadline } => self
                .remember_proof(id, *deadline, now)
                .map(Outcome::Remembered),
        }
    }

    pub(super) fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        match self.families.get(id.as_bytes()).db()? {
            None => Ok(None),
            Some(v) => FamilyRecord::decode(v.value(), id, self.keys)
                .map(Some)
                .map_err(corrupt),
        }
    }

    pub(super) fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>> {
        match self.tokens.get(&key.to_bytes()).db()? {
            None => Ok(None),
            Some(v) => AccessRecord::decode(v.value(), key, self.keys)
                .map(Some)
                .map_err(corrupt),
        }
    }

    /// Writes a family and keeps its deadline entry exact.
    pub(super) fn put_family(
        &mut self,
        id: &FamilyId,
        rec: &FamilyRecord,
        old_deadline: Option<u64>,
    ) -> Result<()> {
        // Every write lands under the current sealing key: a record prepared under a key that
        // a concurrent data-key rotation has since replaced is re-sealed here, so the rotation
        // can never leave a record behind under a key it retires.
        let rec = rec
            .under_current_key(id, self.keys)
            .map_err(StoreError::from_reseal)?;
        let bytes = rec.encode(id, self.keys).map_err(StoreError::Invalid)?;
        self.families.insert(id.as_bytes(), bytes.as_slice()).db()?;
        let entry = Entry::Family(*id);
        if old_deadline != Some(rec.deadline()) {
            if let Some(old) = old_deadline {
                self.deadlines.remove(&dl_key(old, &entry)).db()?;
            }
            self.deadlines
                .insert(&dl_key(rec.deadline(), &entry), ())
                .db()?;
        }
        Ok(())
    }

    /// Writes an access record; returns whether it replaced one.
    pub(super) fn put_token(&mut self, id: &AccessKey, rec: &AccessRecord) -> Result<bool> {
        let rec = rec
            .under_current_key(id, self.keys)
            .map_err(StoreError::from_reseal)?;
        let bytes = rec.encode(id, self.keys).map_err(StoreError::Invalid)?;
        Ok(self
            .tokens
            .insert(&id.to_bytes(), bytes.as_slice())
            .db()?
            .is_some())
    }
}
