//! Every SQL statement the backend sends, in one place: the schema, and the statements of the
//! lookups and writes. Tables live in the schema the connection's `search_path` names.
//!
//! Layout (schema version 1):
//!
//! - `tokendb_meta(name, value)`: magic, schema version, wrapped data keys, current sealing
//!   key, and `keys_version`, bumped whenever the set of data keys changes.
//! - `tokendb_families(id, deadline, key_id, record)`: one row per family, rewritten in place
//!   by each rotation. `deadline` is the record's own (the earlier of its absolute and idle
//!   deadlines, or its end of state); `NULL` for a record the sweeper found damaged.
//! - `tokendb_owners(subject, client, family)`: families by subject and client, written once
//!   at issue, so that a rotation rewrites no index but the deadline's.
//! - `tokendb_tokens(key, family, subject, client, key_id, record)`: access tokens, keyed by
//!   deadline ‖ token id, so the key order is the expiry order; subject and client only for
//!   standalone tokens.
//! - `tokendb_grace(family, generation, due)`: when a family's kept successor is erased.
//! - `tokendb_proofs(id, deadline)`: the replay cache of proofs of possession (DPoP `jti`s, as
//!   keyed hashes), each remembered until its deadline.
//! - `tokendb_commits(writer, seq, at)` (since version 2): one row per writer thread of every
//!   process, holding the number of its last committed write transaction. Each write
//!   transaction sets it just before `COMMIT`, so a writer whose connection broke during
//!   `COMMIT` learns from any server, the promoted standby included, whether that commit is
//!   there.
//!
//! Identifiers and hashes are `bytea`; times are `bigint` Unix milliseconds.

/// The schema version this build creates and reads.
pub(crate) const SCHEMA_VERSION: u32 = 2;

/// Creates the tables of [`SCHEMA_VERSION`] (run once, under the creation lock).
pub(crate) const CREATE: &str = "
CREATE TABLE tokendb_meta (name text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE tokendb_families (
    id bytea PRIMARY KEY,
    deadline bigint,
    key_id integer NOT NULL,
    record bytea NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX tokendb_families_deadline ON tokendb_families (deadline) WHERE deadline IS NOT NULL;
CREATE TABLE tokendb_owners (
    subject bytea NOT NULL,
    client bytea NOT NULL,
    family bytea NOT NULL,
    PRIMARY KEY (subject, client, family)
);
CREATE INDEX tokendb_owners_client ON tokendb_owners (client);
CREATE INDEX tokendb_owners_family ON tokendb_owners (family);
CREATE TABLE tokendb_tokens (
    key bytea PRIMARY KEY,
    family bytea,
    subject bytea,
    client bytea,
    key_id integer NOT NULL,
    record bytea NOT NULL
) WITH (fillfactor = 90);
CREATE INDEX tokendb_tokens_family ON tokendb_tokens (family) WHERE family IS NOT NULL;
CREATE INDEX tokendb_tokens_subject ON tokendb_tokens (subject) WHERE family IS NULL;
CREATE INDEX tokendb_tokens_client ON tokendb_tokens (client) WHERE family IS NULL;
CREATE TABLE tokendb_grace (
    family bytea NOT NULL,
    generation bigint NOT NULL,
    due bigint NOT NULL,
    PRIMARY KEY (family, generation)
);
CREATE INDEX tokendb_grace_due ON tokendb_grace (due);
CREATE TABLE tokendb_proofs (
    id bytea PRIMARY KEY,
    deadline bigint NOT NULL
);
CREATE INDEX tokendb_proofs_deadline ON tokendb_proofs (deadline);
CREATE TABLE tokendb_commits (
    writer bytea PRIMARY KEY,
    seq bigint NOT NULL,
    at timestamptz NOT NULL
);
";

/// From version 1 to 2: the commit markers (run under the creation lock).
pub(crate) const UPGRADE_1_TO_2: &str = "
CREATE TABLE tokendb_commits (
    writer bytea PRIMARY KEY,
    seq bigint NOT NULL,
    at timestamptz NOT NULL
);
";

/// Whether the meta table exists in the connection's schema.
pub(crate) const META_EXISTS: &str = "SELECT to_regclass('tokendb_meta') IS NOT NULL AND EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'tokendb_meta' AND schemaname = current_schema())";
/// Whether any table of the schema exists (a schema with other tables but no meta is not ours).
pub(crate) const ANY_TABLE: &str =
    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()";
pub(crate) const META_GET: &str = "SELECT value FROM tokendb_meta WHERE name = $1";
pub(crate) const META_PUT: &str = "INSERT INTO tokendb_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value";
/// The wrapped keys, the current key id and `keys_version`, in one statement: one snapshot.
pub(crate) const META_KEYS: &str = "SELECT name, value FROM tokendb_meta WHERE name LIKE 'key.%' OR name IN ('current_key', 'keys_version') ORDER BY name";
pub(crate) const META_DROP_KEYS: &str = "DELETE FROM tokendb_meta WHERE name LIKE 'key.%'";

/// The first statement of every write transaction: a shared lock against a concurrent change
/// of the data keys (taken exclusively by key changes), and the keys' version, so a replica
/// whose ring is stale reloads it before it seals anything.
pub(crate) const WRITE_BEGIN: &str = "SELECT pg_advisory_xact_lock_shared($1)::text, (SELECT value FROM tokendb_meta WHERE name = 'keys_version')";
/// Taken by key changes: waits for every write in flight, holds off new ones.
pub(crate) const KEYS_LOCK: &str = "SELECT pg_advisory_xact_lock($1)::text";
/// Serialises issues under a family cap for one (subject, client), across replicas.
pub(crate) const CAP_LOCK: &str = "SELECT pg_advisory_xact_lock($1)::text";
/// The last statement before `COMMIT`: if the transaction wrote anything, it records its
/// sequence number in the writer's row and a row comes back; a read-only transaction writes
/// nothing and gets no row. Transaction ids cannot serve here: a standby promoted before a
/// transaction reached it hands the same id to another transaction, and `txid_status` then
/// answers `committed` for a write that is not there.
pub(crate) const COMMIT_MARK: &str = "INSERT INTO tokendb_commits (writer, seq, at) SELECT $1, $2, now() WHERE txid_current_if_assigned() IS NOT NULL ON CONFLICT (writer) DO UPDATE SET seq = EXCLUDED.seq, at = EXCLUDED.at RETURNING 1";
/// After a `COMMIT` went unanswered: the writer's last committed sequence number. An upsert,
/// not a `SELECT`, because it waits for a transaction still inserting or updating the row (a
/// commit the server is still finishing) instead of reading past it; a row it creates (seq 0)
/// means no commit of this writer is there.
pub(crate) const COMMIT_ASK: &str = "INSERT INTO tokendb_commits (writer, seq, at) VALUES ($1, 0, now()) ON CONFLICT (writer) DO UPDATE SET at = tokendb_commits.at RETURNING seq";
/// Rows of writers that have not committed for a week: processes long gone.
pub(crate) const COMMIT_FORGET: &str =
    "DELETE FROM tokendb_commits WHERE at < now() - interval '7 days'";
/// The database server's clock, in Unix milliseconds.
pub(crate) const NOW_MS: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

pub(crate) const FAMILY_GET: &str = "SELECT record FROM tokendb_families WHERE id = $1";
pub(crate) const FAMILY_LOCK: &str = "SELECT record FROM tokendb_families WHERE id = $1 FOR UPDATE";
pub(crate) const FAMILY_INSERT: &str = "INSERT INTO tokendb_families (id, deadline, key_id, record) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
pub(crate) const FAMILY_UPDATE: &str =
    "UPDATE tokendb_families SET deadline = $2, key_id = $3, record = $4 WHERE id = $1";
pub(crate) const FAMILY_UNFILE: &str = "UPDATE tokendb_families SET deadline = NULL WHERE id = $1";
pub(crate) const FAMILY_DELETE: &str = "DELETE FROM tokendb_families WHERE id = $1";
pub(crate) const OWNER_INSERT: &str = "INSERT INTO tokendb_owners (subject, client, family) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(crate) const OWNER_DELETE: &str = "DELETE FROM tokendb_owners WHERE family = $1";
/// Families of a (subject, client), locked in id order (a fixed order: no deadlock between
/// two revocations).
pub(crate) const OWNED_BY: &str = "SELECT f.id, f.record FROM tokendb_owners o JOIN tokendb_families f ON f.id = o.family WHERE o.subject = $1 AND o.client = $2 ORDER BY f.id FOR UPDATE OF f";
pub(crate) const OWNED_BY_SUBJECT: &str =
    "SELECT DISTINCT family FROM tokendb_owners WHERE subject = $1 ORDER BY family";
pub(crate) const OWNED_BY_CLIENT: &str =
    "SELECT DISTINCT family FROM tokendb_owners WHERE client = $1 ORDER BY family";

pub(crate) const TOKEN_GET: &str = "SELECT record FROM tokendb_tokens WHERE key = $1";
pub(crate) const TOKEN_LOCK: &str = "SELECT record FROM tokendb_tokens WHERE key = $1 FOR UPDATE";
pub(crate) const TOKEN_INSERT: &str = "INSERT INTO tokendb_tokens (key, family, subject, client, key_id, record) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING";
pub(crate) const TOKEN_INSERT_MANY: &str = "INSERT INTO tokendb_tokens (key, subject, client, key_id, record) SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::integer[], $5::bytea[]) ORDER BY 1";
pub(crate) const TOKEN_UPDATE: &str =
    "UPDATE tokendb_tokens SET key_id = $2, record = $3 WHERE key = $1";
pub(crate) const FAMILY_TOKENS: &str =
    "SELECT key FROM tokendb_tokens WHERE family = $1 ORDER BY key";
pub(crate) const FAMILY_TOKENS_DELETE: &str = "DELETE FROM tokendb_tokens WHERE family = $1";
pub(crate) const TOKENS_BY_SUBJECT: &str =
    "SELECT key FROM tokendb_tokens WHERE subject = $1 AND family IS NULL ORDER BY key";
pub(crate) const TOKENS_BY_CLIENT: &str =
    "SELECT key FROM tokendb_tokens WHERE client = $1 AND family IS NULL ORDER BY key";

pub(crate) const GRACE_INSERT: &str = "INSERT INTO tokendb_grace (family, generation, due) VALUES ($1, $2, $3) ON CONFLICT (family, generation) DO UPDATE SET due = EXCLUDED.due";
pub(crate) const GRACE_DELETE: &str =
    "DELETE FROM tokendb_grace WHERE family = $1 AND generation = $2";
pub(crate) const GRACE_DELETE_FAMILY: &str = "DELETE FROM tokendb_grace WHERE family = $1";

/// Due families, skipping those another transaction holds (a rotation, another replica's
/// sweeper): the sweeper never waits for request traffic, and two sweepers never do the same
/// work.
pub(crate) const DUE_FAMILIES: &str = "SELECT id, record, deadline FROM tokendb_families WHERE deadline <= $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED";
pub(crate) const DUE_GRACE: &str = "SELECT family, generation, due FROM tokendb_grace WHERE due <= $1 ORDER BY due LIMIT $2 FOR UPDATE SKIP LOCKED";
pub(crate) const FAMILY_LOCK_NOWAIT: &str =
    "SELECT record FROM tokendb_families WHERE id = $1 FOR UPDATE SKIP LOCKED";
/// Due access tokens: the first run of the table in key (deadline) order.
pub(crate) const DUE_TOKENS_DELETE: &str = "DELETE FROM tokendb_tokens WHERE key IN (SELECT key FROM tokendb_tokens WHERE key < $1 ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING key";
pub(crate) const EARLIEST: &str = "SELECT (SELECT min(deadline) FROM tokendb_families), (SELECT min(due) FROM tokendb_grace), (SELECT key FROM tokendb_tokens ORDER BY key LIMIT 1), (SELECT min(deadline) FROM tokendb_proofs)";

/// Remembers a proof unless a live entry for it is there: a row comes back if it was stored
/// (new, or replacing one whose deadline passed), none if a live one was there. The primary key
/// serialises concurrent calls with one id, across replicas: one of them inserts, the others
/// meet its row.
pub(crate) const PROOF_REMEMBER: &str = "INSERT INTO tokendb_proofs (id, deadline) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET deadline = EXCLUDED.deadline WHERE tokendb_proofs.deadline <= $3 RETURNING 1";
/// Whether a live entry for a proof is there (for a proof already outside its window).
pub(crate) const PROOF_LIVE: &str = "SELECT 1 FROM tokendb_proofs WHERE id = $1 AND deadline > $2";
/// Due proofs, deleted.
pub(crate) const DUE_PROOFS_DELETE: &str = "DELETE FROM tokendb_proofs WHERE id IN (SELECT id FROM tokendb_proofs WHERE deadline <= $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING deadline";

pub(crate) const RESEAL_FAMILIES: &str = "SELECT id FROM tokendb_families WHERE id > $1 AND key_id <> $2 ORDER BY id LIMIT $3 FOR UPDATE";
pub(crate) const RESEAL_TOKENS: &str = "SELECT key FROM tokendb_tokens WHERE key > $1 AND key_id <> $2 ORDER BY key LIMIT $3 FOR UPDATE";
pub(crate) const KEY_IDS_IN_USE: &str = "SELECT key_id FROM tokendb_families GROUP BY key_id UNION SELECT key_id FROM tokendb_tokens GROUP BY key_id";
