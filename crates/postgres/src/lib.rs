//! # tokendb-postgres
//!
//! tokendb's storage backend on PostgreSQL (15 or newer), for deployments where several server
//! replicas must share one token state: reuse detection and revocation only work if every
//! replica sees every rotation and revocation at once.
//!
//! It stores exactly what the embedded backend stores: sealed, MAC'd records under keyed
//! hashes, and data keys wrapped by the caller's master key in a meta row, so every replica
//! that opens with the master key shares them. A database administrator with full read access
//! sees keyed hashes, deadlines and sealed bytes; an edited row reads as
//! [`StoreError::Corrupt`], never as other data.
//!
//! Use it through `tokendb`: `TokenDb::open_postgres(url, &master, config)` (feature
//! `postgres`). `docs/operations.md`, "Running several replicas", says how to run it and what
//! each SQL feature used is for.
//!
//! How it keeps the storage contract of [`tokendb_backend::Backend`]:
//!
//! - **Atomic, serialised per family.** Each write is one transaction at `READ COMMITTED`; a
//!   rotation reads its family `FOR UPDATE`, so two replicas presenting the same token queue
//!   on the row and the second sees the first's successor.
//! - **Durable on `Ok`.** `Ok` is answered after `COMMIT` returned (with the server's
//!   `synchronous_commit`, and a synchronous standby if the operator configured one).
//! - **Never applied twice.** A serialization failure, a deadlock or a dropped connection
//!   before `COMMIT` is retried from the start (nothing was applied). If the connection drops
//!   while `COMMIT` is in flight, the backend reconnects and reads its writer's row in
//!   `tokendb_commits`, which every write transaction sets to its own sequence number just
//!   before `COMMIT`: if the row holds it, the answer computed before the commit is returned;
//!   if not, the write is run again. A rotation whose acknowledgement was lost is thus never
//!   turned into a second rotation (which would look like reuse), and a commit a killed
//!   primary never sent to its promoted standby is not taken for done.
//! - **The sweeper never waits for request traffic.** Due rows are taken with
//!   `FOR UPDATE SKIP LOCKED`: several replicas' sweepers split the work, and a family being
//!   rotated is left for the next pass.
//! - **One clock.** [`PgStore::clock`] is the database server's clock, measured against the
//!   local one every few seconds: replicas whose clocks differ agree on every deadline.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod backend;
mod clock;
mod conn;
mod keys;
mod ops;
mod pool;
mod sql;
mod txn;

pub use clock::DatabaseClock;

use crate::conn::{Conn, Kind, TxError, TxResult, kind, store_error};
use crossbeam_channel::Sender;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokendb_backend::{Done, Failure, Result, StoreError, Timing};
use tokendb_core::time::Clock;
use tokendb_core::{CoreError, KeyRing, MasterKey};

/// The schema version this build creates and reads; a database of a newer one is refused.
pub const SCHEMA_VERSION: u32 = sql::SCHEMA_VERSION;

/// How a [`PgStore`] connects and retries. Start from [`PgOptions::default`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgOptions {
    /// Connections that apply writes, each on its own thread. Default 8.
    pub writers: usize,
    /// Most connections open for lookups (lookups run on the caller's thread; when every one
    /// is busy, a lookup waits for the next one free). Default 16.
    pub readers: usize,
    /// How long a write keeps retrying through conflicts and lost connections (a failover,
    /// say) before it returns the error. Default 30 s.
    pub retry_for: Duration,
    /// The PostgreSQL schema that holds tokendb's tables (created if missing). Default: the
    /// connection's `search_path` (usually `public`).
    pub schema: Option<String>,
    /// How often [`DatabaseClock`] re-measures the database server's clock. Default 10 s.
    pub clock_refresh: Duration,
    /// Trust the operating system's root certificates for TLS to the database. Default on.
    pub system_roots: bool,
    /// More root certificates (PEM) trusted for TLS to the database: a private CA, a cloud
    /// provider's bundle. Default none.
    pub root_certificates_pem: Vec<u8>,
    local_clock: Option<Arc<dyn Clock>>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            writers: 8,
            readers: 16,
            retry_for: Duration::from_secs(30),
            schema: None,
            clock_refresh: Duration::from_secs(10),
            system_roots: true,
            root_certificates_pem: Vec::new(),
            local_clock: None,
        }
    }
}

impl PgOptions {
    /// Sets [`PgOptions::writers`] (at least 1).
    #[must_use]
    pub fn with_writers(mut self, n: usize) -> Self {
        self.writers = n.max(1);
        self
    }

    /// Sets [`PgOptions::readers`] (at least 1).
    #[must_use]
    pub fn with_readers(mut self, n: usize) -> Self {
        self.readers = n.max(1);
        self
    }

    /// Sets [`PgOptions::retry_for`].
    #[must_use]
    pub fn with_retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Sets [`PgOptions::schema`]: lower-case letters, digits and `_`, not starting with a
    /// digit, at most 63 bytes (checked at open).
    #[must_use]
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Sets [`PgOptions::clock_refresh`].
    #[must_use]
    pub fn with_clock_refresh(mut self, d: Duration) -> Self {
        self.clock_refresh = d;
        self
    }

    /// Adds root certificates (PEM, one or more) trusted for TLS to the database. TLS is used
    /// as the URL's `sslmode` says (`prefer` by default; `require` to refuse a plaintext
    /// connection); the server's certificate is always verified against these and the system's
    /// roots, for the host name or address the URL names.
    #[must_use]
    pub fn with_root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates_pem.extend(pem.into());
        self
    }

    /// Sets [`PgOptions::system_roots`].
    #[must_use]
    pub fn with_system_roots(mut self, on: bool) -> Self {
        self.system_roots = on;
        self
    }

    /// The clock this replica reads before correcting it by the database server's (default:
    /// the system clock). For tests and simulations of a replica whose clock is wrong.
    #[must_use]
    pub fn with_local_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.local_clock = Some(clock);
        self
    }
}

/// A write, run on a writer thread with its connection.
type Job = Box<dyn FnOnce(&mut txn::Worker) + Send>;

/// What the writers, the readers and the clock share.
pub(crate) struct Shared {
    config: postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    location: String,
    options: PgOptions,
    /// The master key, to reload the data keys when another replica changes them.
    master: RwLock<MasterKey>,
    /// The data keys and the `keys_version` they were loaded at.
    keys: RwLock<(Arc<KeyRing>, Vec<u8>)>,
    /// The advisory lock id of this schema's key changes.
    keys_lock: i64,
    commits: AtomicU64,
    failure: Mutex<Option<Failure>>,
    closed: AtomicBool,
    readers: pool::Pool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A tokendb database on PostgreSQL: a [`tokendb_backend::Backend`].
pub struct PgStore {
    shared: Arc<Shared>,
    jobs: Mutex<Option<Sender<(Job, Instant)>>>,
    /// Lookups handed over by async callers (`Backend::offload`), run by `readers` threads.
    lookups: Mutex<Option<Sender<tokendb_backend::Lookup>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    clock: Arc<DatabaseClock>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

/// FNV-1a, 64 bits: advisory lock ids from a schema name (not a security function: it only
/// keeps two schemas' locks apart).
fn lock_id(parts: &[&[u8]]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn valid_schema(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl PgStore {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` string), creates
    /// tokendb's tables and data keys there if the schema has none, and opens them with
    /// `master`. Several replicas may call this at once on an empty database: one creates, the
    /// others open what it created.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`]; [`StoreError::NotATokenDb`] if the schema holds other
    /// tables; [`StoreError::NewerFormat`] if it was written by a newer schema version;
    /// [`StoreError::Storage`] if the URL does not parse or the server cannot be reached.
    pub fn open(url: &str, master: &MasterKey, options: PgOptions) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(store_error)?;
        let schema = options.schema.clone();
        if let Some(s) = &schema {
            if !valid_schema(s) {
                return Err(StoreError::Invalid(CoreError::BadField(
                    "PostgreSQL schema name (lower-case letters, digits and _ only)",
                )));
            }
            config.options(&format!("-c search_path={s}"));
        }
        if config.get_application_name().is_none() {
            config.application_name("tokendb");
        }
        let location = location(&config, schema.as_deref());
        let schema_name = schema.clone().unwrap_or_default();
        let keys_lock = lock_id(&[b"tokendb:keys:", schema_name.as_bytes()]);
        let create_lock = lock_id(&[b"tokendb:create:", schema_name.as_bytes()]);
        let tls = conn::tls(&options.root_certificates_pem, options.system_roots)?;
        let mut conn = Conn::connect(&config, &tls).map_err(store_error)?;
        let (ring, version) =
            keys::create_or_load(&mut conn, master, schema.as_deref(), create_lock)?;
        let master = MasterKey::from_hex(&master.to_hex()).map_err(StoreError::Invalid)?;
        let readers = pool::Pool::new(config.clone(), tls.clone(), options.readers, conn);
        let shared = Arc::new(Shared {
            config,
            tls,
            location,
            options: options.clone(),
            master: RwLock::new(master),
            keys: RwLock::new((Arc::new(ring), version)),
            keys_lock,
            commits: AtomicU64::new(0),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            readers,
        });
        let clock = Arc::new(DatabaseClock::new(options.local_clock.clone()));
        clock.measure(&shared)?;
        let (tx, rx) = crossbeam_channel::unbounded::<(Job, Instant)>();
        let mut threads = Vec::new();
        for i in 0..options.writers.max(1) {
            let rx = rx.clone();
            let shared = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tokendb-pg-writer-{i}"))
                    .spawn(move || txn::Worker::new(shared).run(&rx))?,
            );
        }
        let (lookup_tx, lookup_rx) = crossbeam_channel::unbounded::<tokendb_backend::Lookup>();
        for i in 0..options.readers.max(1) {
            let rx = lookup_rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tokendb-pg-lookup-{i}"))
                    .spawn(move || {
                        for job in rx {
                            job();
                        }
                    })?,
            );
        }
        {
            let shared = Arc::clone(&shared);
            let clock = Arc::clone(&clock);
            threads.push(
                std::thread::Builder::new()
                    .name("tokendb-pg-clock".into())
                    .spawn(move || clock.keep_measuring(&shared))?,
            );
        }
        Ok(Self {
            shared,
            jobs: Mutex::new(Some(tx)),
            lookups: Mutex::new(Some(lookup_tx)),
            threads: Mutex::new(threads),
            clock,
        })
    }

    /// The database server's clock, as this replica reads it: the local clock corrected by the
    /// offset last measured. Deadlines are decided by it, so replicas agree.
    #[must_use]
    pub fn clock(&self) -> Arc<DatabaseClock> {
        Arc::clone(&self.clock)
    }

    fn check_usable(&self) -> Result<()> {
        self.shared.check_usable()
    }

    /// Hands a write to a writer thread; `done` is completed there.
    fn submit<T: Send + 'static>(
        &self,
        done: Done<T>,
        op: impl FnOnce(&mut txn::Worker) -> Result<T> + Send + 'static,
    ) {
        if let Err(e) = self.check_usable() {
            done.complete(Err(e));
            return;
        }
        let job: Job = Box::new(move |w: &mut txn::Worker| {
            let started = Instant::now();
            let r = op(w);
            w.finish(done, r, started);
        });
        let Ok(guard) = self.jobs.lock() else {
            return;
        };
        match &*guard {
            // A send fails only once every writer stopped; the job (and its `Done`) is then
            // dropped, which answers `WriterStopped`.
            Some(tx) => {
                let _ = tx.send((job, Instant::now()));
            }
            None => drop(job),
        }
    }

    /// Runs a lookup on a pooled connection (opening one if none is idle). A lost
    /// connection is replaced and the lookup run again; a record under a sealing key this
    /// replica does not know yet (another replica added it) reloads the keys first.
    fn read<T: Send>(&self, f: impl FnMut(&mut Conn, &KeyRing) -> TxResult<T> + Send) -> Result<T> {
        self.check_usable()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            // Called from an async task: the blocking client runs its own runtime, which may
            // not start inside another. Run the lookup on a thread of its own instead.
            return std::thread::scope(|s| {
                s.spawn(|| self.read_here(f))
                    .join()
                    .unwrap_or(Err(StoreError::Failed(Failure::Internal(
                        "a lookup thread panicked",
                    ))))
            });
        }
        self.read_here(f)
    }

    fn read_here<T>(&self, mut f: impl FnMut(&mut Conn, &KeyRing) -> TxResult<T>) -> Result<T> {
        let shared = &self.shared;
        let deadline = Instant::now() + shared.options.retry_for;
        let mut reloaded = false;
        loop {
            let mut conn = match shared.readers.get() {
                Ok(c) => c,
                Err(e) if Instant::now() < deadline => {
                    drop(e);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => return Err(store_error(e)),
            };
            let keys = shared.keys();
            match f(&mut conn, &keys) {
                Ok(v) => return Ok(v),
                Err(TxError::Store(StoreError::Corrupt(CoreError::UnknownKeyId(id))))
                    if !reloaded =>
                {
                    reloaded = true;
                    let r = keys::reload(&mut conn, shared);
                    drop(conn);
                    match r {
                        Ok(()) => {}
                        // Keys this replica cannot unwrap: say so, not "damaged record".
                        Err(StoreError::WrongMasterKey) => return Err(StoreError::WrongMasterKey),
                        Err(_) => return Err(StoreError::Corrupt(CoreError::UnknownKeyId(id))),
                    }
                }
                Err(TxError::Pg(e)) if kind(&e) != Kind::Other && Instant::now() < deadline => {
                    // The connection is closed, not returned: the next try opens a new one.
                    conn.discard();
                    drop(conn);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Shared {
    fn check_usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        match self.failure.lock() {
            Ok(f) => match &*f {
                Some(why) => Err(StoreError::Failed(why.clone())),
                None => Ok(()),
            },
            Err(_) => Err(StoreError::Failed(Failure::LockPoisoned)),
        }
    }

    pub(crate) fn keys(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k.0),
            Err(p) => Arc::clone(&p.into_inner().0),
        }
    }

    pub(crate) fn keys_version(&self) -> Vec<u8> {
        match self.keys.read() {
            Ok(k) => k.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        }
    }

    pub(crate) fn set_keys(&self, ring: KeyRing, version: Vec<u8>) {
        let mut slot = match self.keys.write() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        *slot = (Arc::new(ring), version);
    }

    pub(crate) fn master(&self) -> Result<MasterKey> {
        let m = self
            .master
            .read()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
        MasterKey::from_hex(&m.to_hex()).map_err(StoreError::Invalid)
    }

    pub(crate) fn set_master(&self, new: &MasterKey) -> Result<()> {
        let copy = MasterKey::from_hex(&new.to_hex()).map_err(StoreError::Invalid)?;
        let mut m = self
            .master
            .write()
            .map_err(|_| StoreError::Failed(Failure::LockPoisoned))?;
        *m = copy;
        Ok(())
    }

    fn fail(&self, why: Failure) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(why);
        }
    }
}

/// `host:port/dbname` (and the schema), without user or password: for messages.
fn location(config: &postgres::Config, schema: Option<&str>) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    match schema {
        Some(s) => format!("postgresql://{host}:{port}/{db} (schema {s})"),
        None => format!("postgresql://{host}:{port}/{db}"),
    }
}

/// The time a write spent queued and applying, for the engine's telemetry.
fn timing(queued: Duration, applied: Duration) -> Timing {
    Timing::new(queued, applied, 1)
}
