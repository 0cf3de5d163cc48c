//! [`Store`] as a [`Backend`]: each write becomes one operation for the group-commit writer,
//! each lookup one read of a cached snapshot.

use crate::Store;
use crate::error::{Failure, Result, StoreError};
use crate::ops::{Op, Outcome};
use std::sync::Arc;
use tokendb_backend::{
    AccessIssue, Backend, Done, FamilyIssue, ResealBatch, ResealCursor, Revocation, SweepCounts,
};
use tokendb_core::{
    AccessKey, AccessRecord, AccessStatus, FamilyId, FamilyRecord, IndexHash, KeyId, KeyRing,
    MasterKey, ProofId, RecordBody, RevokeReason,
};
use tokendb_rotation::{FamilyCap, RotateRequest, Rotation};

/// The writer answered an operation with an outcome of another kind: a bug in this crate.
fn mismatch() -> StoreError {
    StoreError::Failed(Failure::Internal(
        "the writer answered with an outcome of another operation",
    ))
}

impl Backend for Store {
    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn keys(&self) -> Arc<KeyRing> {
        self.shared.keys()
    }

    fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        self.read(|r| r.family(id))
    }

    fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>> {
        self.read(|r| r.token(key))
    }

    fn token_status(&self, key: &AccessKey, with_body: bool) -> Result<Option<AccessStatus>> {
        self.read(|r| {
            if with_body {
                r.token_status_and_body(key)
            } else {
                r.token_status(key)
            }
        })
    }

    fn token_opened(
        &self,
        key: &AccessKey,
        open: &dyn Fn(&AccessStatus) -> bool,
    ) -> Result<Option<(AccessStatus, Option<RecordBody>)>> {
        self.read(|r| r.token_opened(key, open))
    }

    fn earliest_deadline(&self) -> Result<Option<u64>> {
        Store::earliest_deadline(self)
    }

    fn issue_family(
        &self,
        id: FamilyId,
        record: FamilyRecord,
        cap: Option<FamilyCap>,
        now: u64,
        done: Done<FamilyIssue>,
    ) {
        let op = Op::IssueFamily {
            id,
            record: Box::new(record),
            cap,
        };
        self.submit(
            op,
            now,
            done.adapt(|r| match r? {
                Outcome::Issued { evicted, .. } => Ok(FamilyIssue::Issued { evicted }),
                Outcome::CapReached { limit } => Ok(FamilyIssue::CapReached { limit }),
                _ => Err(mismatch()),
            }),
        );
    }

    fn issue_access(
        &self,
        key: AccessKey,
        record: AccessRecord,
        now: u64,
        done: Done<AccessIssue>,
    ) {
        let op = Op::IssueAccess {
            key,
            record: Box::new(record),
        };
        self.submit(
            op,
            now,
            done.adapt(|r| match r? {
                Outcome::Issued { .. } => Ok(AccessIssue::Issued),
                Outcome::NotFound => Ok(AccessIssue::FamilyNotFound),
                Outcome::Refused(why) => Ok(AccessIssue::Refused(why)),
                _ => Err(mismatch()),
            }),
        );
    }

    fn issue_access_batch(
        &self,
        tokens: Vec<(AccessKey, AccessRecord)>,
        now: u64,
        done: Done<u64>,
    ) {
        self.submit(
            Op::IssueAccessBatch { tokens },
            now,
            done.adapt(|r| match r? {
                Outcome::IssuedBatch { tokens } => Ok(tokens),
                _ => Err(mismatch()),
            }),
        );
    }

    fn rotate(&self, request: RotateRequest, now: u64, done: Done<Rotation>) {
        self.submit(
            Op::Rotate(Box::new(request)),
            now,
            done.adapt(|r| match r? {
                Outcome::Rotation(r) => Ok(r),
                _ => Err(mismatch()),
            }),
        );
    }

    fn remember_proof(&self, id: ProofId, deadline: u64, now: u64, done: Done<bool>) {
        self.submit(
            Op::RememberProof { id, deadline },
            now,
            done.adapt(|r| match r? {
                Outcome::Remembered(new) => Ok(new),
                _ => Err(mismatch()),
            }),
        );
    }

    fn revoke_token(&self, key: AccessKey, now: u64, done: Done<Option<Revocation>>) {
        self.submit(Op::RevokeToken { key }, now, done.adapt(revocation));
    }

    fn revoke_family(
        &self,
        id: FamilyId,
        reason: RevokeReason,
        now: u64,
        done: Done<Option<Revocation>>,
    ) {
        self.submit(Op::RevokeFamily { id, reason }, now, done.adapt(revocation));
    }

    fn revoke_subject(
        &self,
        subject: IndexHash,
        client: Option<IndexHash>,
        now: u64,
        done: Done<Revocation>,
    ) {
        self.submit(
            Op::RevokeSubject { subject, client },
            now,
            done.adapt(|r| revocation(r)?.ok_or_else(mismatch)),
        );
    }

    fn revoke_client(&self, client: IndexHash, now: u64, done: Done<Revocation>) {
        self.submit(
            Op::RevokeClient { client },
            now,
            done.adapt(|r| revocation(r)?.ok_or_else(mismatch)),
        );
    }

    fn sweep(&self, limit: usize, now: u64, done: Done<SweepCounts>) {
        self.submit(
            Op::Sweep { limit },
            now,
            done.adapt(|r| match r? {
                Outcome::Swept(c) => Ok(c),
                _ => Err(mismatch()),
            }),
        );
    }

    fn reseal(&self, limit: usize, from: ResealCursor, now: u64, done: Done<ResealBatch>) {
        self.submit(
            Op::Reseal { limit, from },
            now,
            done.adapt(|r| match r? {
                Outcome::Resealed(b) => Ok(b),
                _ => Err(mismatch()),
            }),
        );
    }

    fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()> {
        Store::rotate_master_key(self, current, new)
    }

    fn add_sealing_key(&self, master: &MasterKey) -> Result<KeyId> {
        Store::add_sealing_key(self, master)
    }

    fn retire_old_sealing_keys(&self, master: &MasterKey) -> Result<Vec<KeyId>> {
        Store::retire_old_sealing_keys(self, master)
    }

    fn commits(&self) -> u64 {
        Store::commits(self)
    }

    fn failure(&self) -> Option<Failure> {
        self.shared.failure()
    }

    fn mark_failed(&self, why: Failure) {
        self.shared.fail(why);
    }

    fn close(&self) -> Result<()> {
        Store::close(self)
    }
}

fn revocation(outcome: Result<Outcome>) -> Result<Option<Revocation>> {
    match outcome? {
        Outcome::Revoked(r) => Ok(Some(r)),
        Outcome::NotFound => Ok(None),
        _ => Err(mismatch()),
    }
}
