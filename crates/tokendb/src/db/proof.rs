//! The replay cache of proofs of possession (RFC 9449 §11.1): a DPoP proof is accepted once.

use super::{TokenDb, refuse, submit};
use crate::error::{Error, Result};
use crate::telemetry::Op;
use tokendb_backend::Pending;
use tokendb_core::Confirmation;

impl TokenDb {
    /// Remembers a proof of possession — a DPoP proof signed by the key whose thumbprint is
    /// `key`, with unique identifier `jti` — until `until_ms` (Unix ms: the end of the window in
    /// which the proof could be accepted at all). Answers `true` the first time, `false` for
    /// a proof seen before whose window has not ended: a replay, to be refused.
    ///
    /// The cache is a table of the database, keyed by a keyed hash of `key` and `jti` (neither
    /// reaches the disk), filed for the sweeper like every deadline: it survives restarts and,
    /// on a shared backend, is shared by every replica. Each new proof is one durable write
    /// (group-committed with the others). `tokendb-oauth` calls this after it has verified a
    /// proof; an embedder checking proofs itself may call it too.
    ///
    /// ```
    /// use tokendb::{Config, Confirmation, MasterKey, TokenDb};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("t.tdb");
    /// let master = MasterKey::generate();
    /// let key = Confirmation::jkt_from_base64url("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")?;
    /// let until = u64::MAX / 2;
    /// let db = TokenDb::create(&path, &master, Config::default())?;
    /// assert!(db.remember_proof(&key, "e1j3V_bKic8-LAEB", until)?);
    /// assert!(!db.remember_proof(&key, "e1j3V_bKic8-LAEB", until)?, "a replay");
    /// db.close()?;
    /// let db = TokenDb::open(&path, &master, Config::default())?;
    /// assert!(!db.remember_proof(&key, "e1j3V_bKic8-LAEB", until)?, "still, after a restart");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// Storage errors: the proof must then be refused (it may or may not have been stored).
    pub fn remember_proof(&self, key: &Confirmation, jti: &str, until_ms: u64) -> Result<bool> {
        self.start_remember_proof(key, jti, until_ms).wait()
    }

    pub(crate) fn start_remember_proof(
        &self,
        key: &Confirmation,
        jti: &str,
        until_ms: u64,
    ) -> Pending<bool, Error> {
        let op = Op::write("remember_proof");
        if let Err(e) = self.check_open() {
            return refuse(op, e);
        }
        let now = self.now();
        let id = self.hashing().proof_id(&key.to_bytes(), jti.as_bytes());
        submit(op, |done| {
            self.backend().remember_proof(id, until_ms, now, done)
        })
        .map(|r| r.map_err(Error::Store))
    }
}
