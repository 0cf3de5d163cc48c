//! Operator work on a whole file: statistics, the integrity scan, key usage, compaction and a
//! consistent copy. The `tokendb` command is built on these; an embedder may call them too.
//!
//! Each scan reads one consistent snapshot (a single redb read transaction), so it never sees
//! half of a batch, and runs beside the writer without holding it up.

use crate::Store;
use crate::error::RedbResult;
use crate::error::Result;
use crate::tables::{
    BY_CLIENT, BY_SUBJECT, CLIENT_TOKENS, DEADLINES, DL_KEY_LEN, FAMILIES, FAMILY_TOKENS,
    FT_KEY_LEN, IX_KEY_LEN, PROOFS, RECENT_LEN, RECENT_TOKENS, SUBJECT_TOKENS, TOKENS, TX_KEY_LEN,
};
use redb::ReadableTable as _;
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};
use tokendb_core::ids::{ACCESS_KEY_LEN, FAMILY_ID_LEN, PROOF_ID_LEN};
use tokendb_core::{AccessKey, AccessRecord, FamilyId, FamilyRecord, KeyRing};

mod maintenance;
mod stats;
mod verify;

pub use stats::{AccessStats, Expiring, FamilyStats, IndexCounts, StoreStats};
pub use verify::{Problem, VerifyReport};

/// The tables of one read snapshot.
struct Snap {
    families: ReadOnlyTable<&'static [u8; FAMILY_ID_LEN], &'static [u8]>,
    tokens: ReadOnlyTable<&'static [u8; ACCESS_KEY_LEN], &'static [u8]>,
    family_tokens: ReadOnlyTable<&'static [u8; FT_KEY_LEN], ()>,
    deadlines: ReadOnlyTable<&'static [u8; DL_KEY_LEN], ()>,
    by_subject: ReadOnlyTable<&'static [u8; IX_KEY_LEN], ()>,
    by_client: ReadOnlyTable<&'static [u8; IX_KEY_LEN], ()>,
    subject_tokens: ReadOnlyTable<&'static [u8; TX_KEY_LEN], ()>,
    client_tokens: ReadOnlyTable<&'static [u8; TX_KEY_LEN], ()>,
    recent_tokens: ReadOnlyTable<&'static [u8; ACCESS_KEY_LEN], &'static [u8; RECENT_LEN]>,
    /// The replay cache; `None` in a file no build with it has written to yet.
    proofs: Option<ReadOnlyTable<&'static [u8; PROOF_ID_LEN], u64>>,
}

impl Snap {
    fn open(txn: &ReadTransaction) -> Result<Self> {
        Ok(Self {
            families: txn.open_table(FAMILIES).db()?,
            tokens: txn.open_table(TOKENS).db()?,
            family_tokens: txn.open_table(FAMILY_TOKENS).db()?,
            deadlines: txn.open_table(DEADLINES).db()?,
            by_subject: txn.open_table(BY_SUBJECT).db()?,
            by_client: txn.open_table(BY_CLIENT).db()?,
            subject_tokens: txn.open_table(SUBJECT_TOKENS).db()?,
            client_tokens: txn.open_table(CLIENT_TOKENS).db()?,
            recent_tokens: txn.open_table(RECENT_TOKENS).db()?,
            proofs: match txn.open_table(PROOFS) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e).db(),
            },
        })
    }

    /// A family record: `None` if absent, `Some(Err)` if it does not authenticate.
    fn family(
        &self,
        id: &FamilyId,
        keys: &KeyRing,
    ) -> Result<Option<Result<FamilyRecord, tokendb_core::CoreError>>> {
        Ok(self
            .families
            .get(id.as_bytes())
            .db()?
            .map(|v| FamilyRecord::decode(v.value(), id, keys)))
    }

    /// The deadline a proof is remembered until, if it is in the replay cache.
    fn proof(&self, id: &tokendb_core::ProofId) -> Result<Option<u64>> {
        match &self.proofs {
            None => Ok(None),
            Some(t) => Ok(t.get(id.as_bytes()).db()?.map(|v| v.value())),
        }
    }

    fn token(
        &self,
        id: &AccessKey,
        keys: &KeyRing,
    ) -> Result<Option<Result<AccessRecord, tokendb_core::CoreError>>> {
        Ok(self
            .tokens
            .get(&id.to_bytes())
            .db()?
            .map(|v| AccessRecord::decode(v.value(), id, keys)))
    }
}

impl Store {
    /// Runs `f` on one read snapshot of every table.
    fn with_tables<R>(&self, f: impl FnOnce(&Snap) -> Result<R>) -> Result<R> {
        self.check_usable()?;
        let guard = self.shared.read_db()?;
        let db = self.shared.handle(&guard)?;
        let txn = db.begin_read().db()?;
        let snap = Snap::open(&txn)?;
        f(&snap)
    }
}
