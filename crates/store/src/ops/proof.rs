//! The replay cache: a proof (a DPoP proof's key thumbprint and `jti`, as a keyed hash) is
//! accepted once until its deadline.

use super::*;

impl Tx<'_> {
    /// Remembers proof `id` until `deadline` and answers `true`, unless a live entry for it
    /// (deadline after `now`) is there already: then `false`, and nothing changes. An entry
    /// that is due but not swept yet is replaced. A deadline at or before `now` is answered
    /// `true` and not stored: such a proof is outside its window, whoever presents it again.
    pub(super) fn remember_proof(&mut self, id: &ProofId, deadline: u64, now: u64) -> Result<bool> {
        let old = self.proofs.get(id.as_bytes()).db()?.map(|v| v.value());
        if old.is_some_and(|d| d > now) {
            return Ok(false);
        }
        if deadline <= now {
            return Ok(true);
        }
        let entry = Entry::Proof(*id);
        if let Some(d) = old {
            self.deadlines.remove(&dl_key(d, &entry)).db()?;
        }
        self.proofs.insert(id.as_bytes(), deadline).db()?;
        self.deadlines.insert(&dl_key(deadline, &entry), ()).db()?;
        Ok(true)
    }

    /// The sweeper's step for a due `deadlines` entry of a proof: deletes the proof if it is
    /// due, re-files the entry if the proof was remembered again for later.
    pub(super) fn sweep_proof(
        &mut self,
        key: &[u8; DL_KEY_LEN],
        id: &ProofId,
        now: u64,
        c: &mut SweepCounts,
    ) -> Result<()> {
        self.deadlines.remove(key).db()?;
        let stored = self.proofs.get(id.as_bytes()).db()?.map(|v| v.value());
        match stored {
            Some(d) if d <= now => {
                self.proofs.remove(id.as_bytes()).db()?;
                c.proofs += 1;
            }
            Some(d) => {
                self.deadlines
                    .insert(&dl_key(d, &Entry::Proof(*id)), ())
                    .db()?;
                c.refiled += 1;
            }
            None => {}
        }
        Ok(())
    }
}
