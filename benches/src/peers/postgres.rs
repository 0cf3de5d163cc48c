//! PostgreSQL through the synchronous `postgres` client: the "tokens table in Postgres" that
//! tokendb replaces.
//!
//! Table `tokens(id bytea PRIMARY KEY, value bytea)`. Each worker has its own connection (one backend
//! process) and prepares its statements once. Writes are durable: the server runs with `fsync = on`
//! and `synchronous_commit = on` (see [`crate::servers::PostgresServer`]), so a commit returns after
//! its WAL record is flushed. `issue` is one `INSERT` per transaction; `rotate` is `SELECT ... FOR
//! UPDATE` then `UPDATE` of a random loaded row in one transaction, the usual shape of a
//! refresh-token rotation on a tokens table.

use postgres::{Client, Config, NoTls};

use crate::BenchResult;
use crate::dataset::{self, Dataset};
use crate::harness::Op;

/// Rows per `INSERT ... SELECT unnest(...)` statement while loading.
pub const LOAD_BATCH: usize = 10_000;

const LOOKUP_SQL: &str = "SELECT value FROM tokens WHERE id = $1";
const LOCK_SQL: &str = "SELECT value FROM tokens WHERE id = $1 FOR UPDATE";
const INSERT_SQL: &str = "INSERT INTO tokens (id, value) VALUES ($1, $2)";
const UPDATE_SQL: &str = "UPDATE tokens SET value = $2 WHERE id = $1";

/// A PostgreSQL database reached through `config`.
#[derive(Debug, Clone)]
pub struct Postgres {
    config: Config,
}

impl Postgres {
    /// Targets the server and database `config` names.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    /// A new connection.
    pub fn connect(&self) -> BenchResult<Client> {
        Ok(self.config.connect(NoTls)?)
    }

    /// (Re)creates the empty `tokens` table.
    pub fn create_table(&self) -> BenchResult<()> {
        self.connect()?.batch_execute(
            "DROP TABLE IF EXISTS tokens;
             CREATE TABLE tokens (id bytea PRIMARY KEY, value bytea NOT NULL);",
        )?;
        Ok(())
    }

    /// Loads every key of `data` in [`LOAD_BATCH`]-row statements (one transaction), then
    /// `VACUUM ANALYZE`s the table so the planner and the visibility map are settled.
    pub fn load(&self, data: &Dataset) -> BenchResult<()> {
        let mut client = self.connect()?;
        let mut txn = client.transaction()?;
        let insert = txn.prepare(
            "INSERT INTO tokens (id, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
        )?;
        for (chunk_no, chunk) in data.keys().chunks(LOAD_BATCH).enumerate() {
            let ids: Vec<&[u8]> = chunk.iter().map(|k| k.as_slice()).collect();
            let values: Vec<Vec<u8>> = (0..chunk.len())
                .map(|j| data.value(chunk_no * LOAD_BATCH + j))
                .collect();
            txn.execute(&insert, &[&ids, &values])?;
        }
        txn.commit()?;
        // One statement per call: several in one string would run as one transaction block, which
        // VACUUM refuses.
        client.batch_execute("VACUUM ANALYZE tokens")?;
        client.batch_execute("CHECKPOINT")?;
        Ok(())
    }

    /// Size of the table with its index and TOAST, in bytes.
    pub fn table_bytes(&self) -> BenchResult<u64> {
        let row = self
            .connect()?
            .query_one("SELECT pg_total_relation_size('tokens')", &[])?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?)?)
    }

    /// A lookup worker: its own connection, the lookup prepared once.
    pub fn lookup_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let mut client = self.connect()?;
        let lookup = client.prepare(LOOKUP_SQL)?;
        Ok(Box::new(move |rng| {
            let key = data.random_key(rng).as_slice();
            let row = client
                .query_opt(&lookup, &[&key])?
                .ok_or("postgres: a loaded key is missing")?;
            std::hint::black_box(row.try_get::<_, &[u8]>(0)?.len());
            Ok(1)
        }))
    }

    /// An `issue` worker: its own connection, one fresh row per durable transaction.
    pub fn issue_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let mut client = self.connect()?;
        let insert = client.prepare(INSERT_SQL)?;
        let mut value = Vec::with_capacity(data.value_size());
        Ok(Box::new(move |rng| {
            let key = dataset::fresh_key(rng);
            dataset::fresh_value(rng, data.value_size(), &mut value);
            client.execute(&insert, &[&key.as_slice(), &value.as_slice()])?;
            Ok(1)
        }))
    }

    /// A `rotate` worker: its own connection; locks a random loaded row with `SELECT ... FOR
    /// UPDATE`, rewrites its value, and commits, in one durable transaction.
    pub fn rotate_worker<'a>(&self, data: &'a Dataset) -> BenchResult<Op<'a>> {
        let mut client = self.connect()?;
        let lock = client.prepare(LOCK_SQL)?;
        let update = client.prepare(UPDATE_SQL)?;
        let mut value = Vec::with_capacity(data.value_size());
        Ok(Box::new(move |rng| {
            let key = data.random_key(rng).as_slice();
            let mut txn = client.transaction()?;
            let row = txn
                .query_opt(&lock, &[&key])?
                .ok_or("postgres: a loaded key is missing")?;
            let old_len = row.try_get::<_, &[u8]>(0)?.len();
            dataset::fresh_value(rng, old_len, &mut value);
            txn.execute(&update, &[&key, &value.as_slice()])?;
            txn.commit()?;
            Ok(1)
        }))
    }
}
