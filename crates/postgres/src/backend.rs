//! [`PgStore`] as a [`Backend`]: lookups on pooled connections from the caller's thread,
//! writes on the writer threads.

use crate::conn::{TxError, corrupt, from_ms};
use crate::ops::key_deadline;
use crate::{PgStore, keys, sql};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokendb_backend::{
    AccessIssue, Backend, Done, Failure, FamilyIssue, ResealBatch, ResealCursor, Result,
    Revocation, StoreError, SweepCounts,
};
use tokendb_core::time::Clock;
use tokendb_core::{
    AccessKey, AccessRecord, AccessStatus, CoreError, FamilyId, FamilyRecord, IndexHash, KeyId,
    KeyRing, MasterKey, ProofId, RevokeReason,
};
use tokendb_rotation::{FamilyCap, RotateRequest, Rotation};

impl Backend for PgStore {
    fn location(&self) -> String {
        self.shared.location.clone()
    }

    fn keys(&self) -> Arc<KeyRing> {
        self.shared.keys()
    }

    fn clock(&self) -> Option<Arc<dyn Clock>> {
        Some(Arc::clone(&self.clock) as Arc<dyn Clock>)
    }

    fn offload(
        &self,
        job: tokendb_backend::Lookup,
    ) -> std::result::Result<(), tokendb_backend::Lookup> {
        let Ok(guard) = self.lookups.lock() else {
            return Err(job);
        };
        match &*guard {
            Some(tx) => tx.send(job).map_err(|e| e.into_inner()),
            None => Err(job),
        }
    }

    fn family(&self, id: &FamilyId) -> Result<Option<FamilyRecord>> {
        self.read(|conn, keys| {
            match conn.query_opt(sql::FAMILY_GET, &[&id.as_bytes().as_slice()])? {
                None => Ok(None),
                Some(row) => FamilyRecord::decode(row.get::<_, &[u8]>(0), id, keys)
                    .map(Some)
                    .map_err(|e| TxError::Store(corrupt(e))),
            }
        })
    }

    fn token(&self, key: &AccessKey) -> Result<Option<AccessRecord>> {
        self.read(|conn, keys| {
            match conn.query_opt(sql::TOKEN_GET, &[&key.to_bytes().as_slice()])? {
                None => Ok(None),
                Some(row) => AccessRecord::decode(row.get::<_, &[u8]>(0), key, keys)
                    .map(Some)
                    .map_err(|e| TxError::Store(corrupt(e))),
            }
        })
    }

    fn token_status(&self, key: &AccessKey, with_body: bool) -> Result<Option<AccessStatus>> {
        let decode = if with_body {
            AccessRecord::decode_status_and_body
        } else {
            AccessRecord::decode_status
        };
        self.read(|conn, keys| {
            match conn.query_opt(sql::TOKEN_GET, &[&key.to_bytes().as_slice()])? {
                None => Ok(None),
                Some(row) => decode(row.get::<_, &[u8]>(0), key, keys)
                    .map(Some)
                    .map_err(|e| TxError::Store(corrupt(e))),
            }
        })
    }

    fn earliest_deadline(&self) -> Result<Option<u64>> {
        self.read(|conn, _| {
            let row = conn.query_one(sql::EARLIEST, &[])?;
            let family: Option<i64> = row.get(0);
            let grace: Option<i64> = row.get(1);
            let token: Option<Vec<u8>> = row.get(2);
            let proof: Option<i64> = row.get(3);
            Ok([
                family.map(from_ms),
                grace.map(from_ms),
                token.as_deref().and_then(key_deadline),
                proof.map(from_ms),
            ]
            .into_iter()
            .flatten()
            .min())
        })
    }

    fn issue_family(
        &self,
        id: FamilyId,
        record: FamilyRecord,
        cap: Option<FamilyCap>,
        now: u64,
        done: Done<FamilyIssue>,
    ) {
        self.submit(done, move |w| {
            w.write(|tx| tx.issue_family(&id, &record, cap, now))
        });
    }

    fn issue_access(
        &self,
        key: AccessKey,
        record: AccessRecord,
        _now: u64,
        done: Done<AccessIssue>,
    ) {
        self.submit(done, move |w| w.write(|tx| tx.issue_access(&key, &record)));
    }

    fn issue_access_batch(
        &self,
        tokens: Vec<(AccessKey, AccessRecord)>,
        _now: u64,
        done: Done<u64>,
    ) {
        self.submit(done, move |w| w.write(|tx| tx.issue_access_batch(&tokens)));
    }

    fn rotate(&self, request: RotateRequest, now: u64, done: Done<Rotation>) {
        self.submit(done, move |w| w.write(|tx| tx.rotate(&request, now)));
    }

    fn revoke_token(&self, key: AccessKey, now: u64, done: Done<Option<Revocation>>) {
        self.submit(done, move |w| {
            w.write(|tx| tx.revoke_token(&key, RevokeReason::Requested, now))
        });
    }

    fn revoke_family(
        &self,
        id: FamilyId,
        reason: RevokeReason,
        now: u64,
        done: Done<Option<Revocation>>,
    ) {
        self.submit(done, move |w| {
            w.write(|tx| tx.revoke_family(&id, reason, now))
        });
    }

    fn revoke_subject(
        &self,
        subject: IndexHash,
        client: Option<IndexHash>,
        now: u64,
        done: Done<Revocation>,
    ) {
        self.submit(done, move |w| {
            w.write(|tx| tx.revoke_indexed(true, &subject, client, now))
        });
    }

    fn revoke_client(&self, client: IndexHash, now: u64, done: Done<Revocation>) {
        self.submit(done, move |w| {
            w.write(|tx| tx.revoke_indexed(false, &client, None, now))
        });
    }

    fn remember_proof(&self, id: ProofId, deadline: u64, now: u64, done: Done<bool>) {
        self.submit(done, move |w| {
            w.write(|tx| tx.remember_proof(&id, deadline, now))
        });
    }

    fn sweep(&self, limit: usize, now: u64, done: Done<SweepCounts>) {
        self.submit(done, move |w| w.write(|tx| tx.sweep(limit, now)));
    }

    fn reseal(&self, limit: usize, from: ResealCursor, _now: u64, done: Done<ResealBatch>) {
        self.submit(done, move |w| w.write(|tx| tx.reseal(limit, &from)));
    }

    fn rotate_master_key(&self, current: &MasterKey, new: &MasterKey) -> Result<()> {
        self.check_usable()?;
        keys::rotate_master(&self.shared, current, new)
    }

    fn add_sealing_key(&self, master: &MasterKey) -> Result<KeyId> {
        self.check_usable()?;
        keys::change(&self.shared, master, |_, ring| Ok(ring.add_sealing_key()))
    }

    fn retire_old_sealing_keys(&self, master: &MasterKey) -> Result<Vec<KeyId>> {
        self.check_usable()?;
        keys::change(&self.shared, master, |conn, ring| {
            // Under the exclusive keys lock: no write is in flight, so no record can appear
            // under an old key between this count and the retirement.
            let in_use = keys::ids_in_use(conn)?;
            let current = ring.current_key_id();
            let old: Vec<KeyId> = ring
                .sealing_key_ids()
                .into_iter()
                .filter(|k| *k != current)
                .collect();
            if let Some(k) = old.iter().find(|k| in_use.contains(k)) {
                return Err(StoreError::Invalid(CoreError::UnknownKeyId(k.0)));
            }
            for k in &old {
                ring.retire_sealing_key(*k).map_err(StoreError::Invalid)?;
            }
            Ok(old)
        })
    }

    fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    fn failure(&self) -> Option<Failure> {
        self.shared.failure.lock().ok().and_then(|f| f.clone())
    }

    fn mark_failed(&self, why: Failure) {
        self.shared.fail(why);
    }

    fn close(&self) -> Result<()> {
        // Writers and lookup threads finish what is queued, then stop; later calls are
        // refused.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut lookups) = self.lookups.lock() {
            lookups.take();
        }
        self.shared.closed.store(true, Ordering::Release);
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => Vec::new(),
        };
        let me = std::thread::current().id();
        for t in threads {
            // The last handle can be dropped on one of these threads (a lookup job holds one):
            // that thread finishes on its own once its channel is closed.
            if t.thread().id() == me {
                continue;
            }
            if t.join().is_err() {
                self.shared.fail(Failure::WriterPanicked);
            }
        }
        self.shared.readers.close();
        Ok(())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        let _ = Backend::close(self);
    }
}
