//! The meta rows: creating the schema, the schema version, and the data keys wrapped under the
//! master key — loaded at open, reloaded when another replica changes them, changed under an
//! exclusive lock that waits for every write in flight.

use crate::conn::{Conn, corrupt, store_error};
use crate::sql;
use crate::{Shared, lock_id};
use tokendb_backend::{Result, StoreError};
use tokendb_core::{CoreError, KeyId, KeyPurpose, KeyRing, MasterKey, WrappedKey};

const MAGIC: &[u8] = b"tokendb";

/// Rolls back on error: what every multi-statement step here does before returning one.
fn in_txn<T>(conn: &mut Conn, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
    conn.batch("BEGIN").map_err(store_error)?;
    match f(conn) {
        Ok(v) => {
            conn.batch("COMMIT").map_err(store_error)?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn meta(conn: &mut Conn, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(conn
        .query_opt(sql::META_GET, &[&name])
        .map_err(store_error)?
        .map(|r| r.get::<_, Vec<u8>>(0)))
}

fn put_meta(conn: &mut Conn, name: &str, value: &[u8]) -> Result<()> {
    conn.execute(sql::META_PUT, &[&name, &value])
        .map_err(store_error)?;
    Ok(())
}

/// Creates tokendb's tables and keys in an empty schema, or checks and loads them. Returns the
/// key ring and its `keys_version`.
pub(crate) fn create_or_load(
    conn: &mut Conn,
    master: &MasterKey,
    schema: Option<&str>,
    create_lock: i64,
) -> Result<(KeyRing, Vec<u8>)> {
    let location = schema.unwrap_or("the connection's search_path").to_owned();
    in_txn(conn, |conn| {
        conn.query_one(sql::CAP_LOCK, &[&create_lock])
            .map_err(store_error)?;
        if let Some(s) = schema {
            // `s` was checked to be a plain lower-case identifier.
            conn.batch(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .map_err(store_error)?;
        }
        let exists: bool = conn
            .query_one(sql::META_EXISTS, &[])
            .map_err(store_error)?
            .get(0);
        if !exists {
            let tables: i64 = conn
                .query_one(sql::ANY_TABLE, &[])
                .map_err(store_error)?
                .get(0);
            if tables > 0 {
                return Err(StoreError::NotATokenDb(format!(
                    "schema {location} (it holds other tables)"
                )));
            }
            conn.batch(sql::CREATE).map_err(store_error)?;
            let ring = KeyRing::generate();
            put_meta(conn, "magic", MAGIC)?;
            put_meta(conn, "schema_version", &sql::SCHEMA_VERSION.to_be_bytes())?;
            let version = 1u64.to_be_bytes().to_vec();
            put_keys(conn, master, &ring, &version)?;
            return Ok((ring, version));
        }
        if meta(conn, "magic")?.as_deref() != Some(MAGIC) {
            return Err(StoreError::NotATokenDb(format!("schema {location}")));
        }
        let found = meta(conn, "schema_version")?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| StoreError::NotATokenDb(format!("schema {location}")))?;
        if found > sql::SCHEMA_VERSION {
            return Err(StoreError::NewerFormat {
                found,
                supported: sql::SCHEMA_VERSION,
            });
        }
        if found == 1 {
            // Version 1 lacked the commit markers; every later change adds a step here.
            conn.batch(sql::UPGRADE_1_TO_2).map_err(store_error)?;
            put_meta(conn, "schema_version", &sql::SCHEMA_VERSION.to_be_bytes())?;
        } else if found < sql::SCHEMA_VERSION {
            return Err(StoreError::OlderFormat {
                found,
                supported: sql::SCHEMA_VERSION,
            });
        }
        conn.execute(sql::COMMIT_FORGET, &[]).map_err(store_error)?;
        load(conn, master)
    })
}

/// The stored key set, still wrapped.
struct Stored {
    wrapped: Vec<WrappedKey>,
    current: KeyId,
    version: Vec<u8>,
}

/// Reads the wrapped keys, the current key id and `keys_version` in one statement (one
/// snapshot), and unwraps them.
fn load(conn: &mut Conn, master: &MasterKey) -> Result<(KeyRing, Vec<u8>)> {
    let stored = read(conn)?;
    let ring = unwrap(master, &stored)?;
    Ok((ring, stored.version))
}

fn unwrap(master: &MasterKey, s: &Stored) -> Result<KeyRing> {
    KeyRing::unwrap_all(master, &s.wrapped, s.current).map_err(|e| match e {
        CoreError::WrongMasterKey => StoreError::WrongMasterKey,
        e => StoreError::Corrupt(e),
    })
}

fn read(conn: &mut Conn) -> Result<Stored> {
    let rows = conn.query(sql::META_KEYS, &[]).map_err(store_error)?;
    let mut wrapped = Vec::new();
    let mut current = None;
    let mut version = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let value: Vec<u8> = row.get(1);
        match name.as_str() {
            "current_key" => {
                current = <[u8; 4]>::try_from(value.as_slice())
                    .ok()
                    .map(|b| KeyId(u32::from_be_bytes(b)));
            }
            "keys_version" => version = value,
            _ => wrapped.push(WrappedKey::decode(&value).map_err(corrupt)?),
        }
    }
    let current = current.ok_or(StoreError::Corrupt(CoreError::BadField("current key id")))?;
    Ok(Stored {
        wrapped,
        current,
        version,
    })
}

fn put_keys(conn: &mut Conn, master: &MasterKey, ring: &KeyRing, version: &[u8]) -> Result<()> {
    conn.execute(sql::META_DROP_KEYS, &[])
        .map_err(store_error)?;
    for (i, w) in ring.wrap_all(master).iter().enumerate() {
        put_meta(conn, &format!("key.{i:04}"), &w.encode())?;
    }
    put_meta(conn, "current_key", &ring.current_key_id().0.to_be_bytes())?;
    put_meta(conn, "keys_version", version)
}

/// Reloads the data keys (another replica added or retired one). If they no longer unwrap
/// under this replica's master key (another replica rotated it) and the change only retired
/// keys or moved `current` to one this replica holds, the ring follows without unwrapping;
/// a key this replica has never seen needs the new master key: [`StoreError::WrongMasterKey`]
/// until the replica is restarted with it (its writes are refused meanwhile, never sealed
/// under a retired key).
pub(crate) fn reload(conn: &mut Conn, shared: &Shared) -> Result<()> {
    let master = shared.master()?;
    let stored = read(conn)?;
    let ring = match unwrap(&master, &stored) {
        Ok(ring) => ring,
        Err(StoreError::WrongMasterKey) => {
            let ids: Vec<KeyId> = stored
                .wrapped
                .iter()
                .filter(|w| w.purpose == KeyPurpose::Sealing)
                .map(|w| w.id)
                .collect();
            shared
                .keys()
                .restricted_to(&ids, stored.current)
                .map_err(|_| StoreError::WrongMasterKey)?
        }
        Err(e) => return Err(e),
    };
    shared.set_keys(ring, stored.version);
    Ok(())
}

fn next_version(v: &[u8]) -> Vec<u8> {
    let n = <[u8; 8]>::try_from(v).map_or(0, u64::from_be_bytes);
    n.wrapping_add(1).to_be_bytes().to_vec()
}

/// Changes the key set: under the exclusive keys lock (every write in flight finishes first,
/// new ones wait), with the ring as stored, then bumps `keys_version` so every replica
/// reloads before its next write.
pub(crate) fn change<R>(
    shared: &Shared,
    master: &MasterKey,
    f: impl FnOnce(&mut Conn, &mut KeyRing) -> Result<R>,
) -> Result<R> {
    let mut conn = Conn::connect(&shared.config, &shared.tls).map_err(store_error)?;
    let (r, ring, version) = in_txn(&mut conn, |conn| {
        conn.query_one(sql::KEYS_LOCK, &[&shared.keys_lock])
            .map_err(store_error)?;
        let (mut ring, version) = load(conn, master)?;
        let r = f(conn, &mut ring)?;
        let version = next_version(&version);
        put_keys(conn, master, &ring, &version)?;
        Ok((r, ring, version))
    })?;
    shared.set_keys(ring, version);
    Ok(r)
}

/// Re-wraps the data keys under `new`. The key set does not change, so other replicas keep
/// their keys; they need `new` only to reload after a later key change (restart them with it).
pub(crate) fn rotate_master(shared: &Shared, current: &MasterKey, new: &MasterKey) -> Result<()> {
    let mut conn = Conn::connect(&shared.config, &shared.tls).map_err(store_error)?;
    in_txn(&mut conn, |conn| {
        conn.query_one(sql::KEYS_LOCK, &[&shared.keys_lock])
            .map_err(store_error)?;
        let (ring, version) = load(conn, current)?;
        put_keys(conn, new, &ring, &version)
    })?;
    shared.set_master(new)
}

/// The key ids records use, for retiring.
pub(crate) fn ids_in_use(conn: &mut Conn) -> Result<Vec<KeyId>> {
    Ok(conn
        .query(sql::KEY_IDS_IN_USE, &[])
        .map_err(store_error)?
        .iter()
        .map(|r| KeyId(u32::try_from(r.get::<_, i32>(0)).unwrap_or(u32::MAX)))
        .collect())
}

/// The advisory lock id serialising issues of one (subject, client) under a family cap.
pub(crate) fn cap_lock(shared: &Shared, subject: &[u8], client: &[u8]) -> i64 {
    lock_id(&[&shared.keys_lock.to_be_bytes(), b"cap", subject, client])
}
