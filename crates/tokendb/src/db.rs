//! [`TokenDb`]: a storage backend, the sweeper, the token format and the clock, together. One
//! file per group of verbs: `issue`, `lookup`, `rotate`, `revoke`, `proof` (the replay cache),
//! `operate` (the operator surface).

mod issue;
mod lookup;
mod operate;
pub use operate::SealingKeys;
mod proof;
mod revoke;
mod rotate;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{EventBus, EventReceiver};
use crate::telemetry::{Label, LookupMetrics, Op};
use crate::types::Event;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokendb_backend::{Backend, Done, Pending, StoreError};
use tokendb_core::{KeyRing, ParsedToken};
#[cfg(feature = "postgres")]
use tokendb_postgres::PgOptions;
use tokendb_store::Store;
use tokendb_sweeper::{PassReport, Sweeper, SweeperMetrics};

struct Inner {
    backend: Arc<dyn Backend>,
    /// The key ring as it was at open, for its lookup, tag and index keys only: those are fixed
    /// for the life of a database (only sealing keys come and go), so hashing a token or a
    /// subject needs no lock. Sealing and opening use [`TokenDb::keys`], the current ring.
    fixed: Arc<KeyRing>,
    /// The same backend when it is a redb file: compaction and backup are file operations.
    file: Option<Arc<Store>>,
    config: Config,
    events: Arc<EventBus>,
    sweeper: Mutex<Option<Sweeper>>,
    manual_metrics: SweeperMetrics,
    last_now: AtomicU64,
    closed: AtomicBool,
    lookups: LookupMetrics,
}

/// An open token database. Cheap to clone (an `Arc`), `Send + Sync`: share one between all
/// request handlers. Its methods are synchronous: a write returns once it is durable. From an
/// async runtime use [`TokenDb::asynchronous`]: the same operations as futures that the writer
/// completes, on the same machinery (each synchronous write is its future, waited for).
#[derive(Clone)]
pub struct TokenDb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDb")
            .field("location", &self.inner.backend.location())
            .finish_non_exhaustive()
    }
}

impl TokenDb {
    /// Creates a new database file under `master`.
    ///
    /// # Errors
    /// [`Error::Store`] with [`StoreError::AlreadyExists`] if the file exists; I/O errors.
    pub fn create(
        path: impl AsRef<Path>,
        master: &crate::MasterKey,
        config: Config,
    ) -> Result<Self> {
        let store = Store::create(path, master, config.store)?;
        Self::start_file(store, config)
    }

    /// Opens an existing database file.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`], [`StoreError::NotATokenDb`], [`StoreError::NewerFormat`]
    /// (each leaving the file untouched), [`StoreError::NotFound`], [`StoreError::Locked`].
    pub fn open(path: impl AsRef<Path>, master: &crate::MasterKey, config: Config) -> Result<Self> {
        let store = Store::open(path, master, config.store)?;
        Self::start_file(store, config)
    }

    /// Opens the file if it exists, creates it otherwise.
    ///
    /// # Errors
    /// As [`TokenDb::open`] and [`TokenDb::create`].
    pub fn open_or_create(
        path: impl AsRef<Path>,
        master: &crate::MasterKey,
        config: Config,
    ) -> Result<Self> {
        if path.as_ref().exists() {
            Self::open(path, master, config)
        } else {
            Self::create(path, master, config)
        }
    }

    fn start_file(store: Store, config: Config) -> Result<Self> {
        let store = Arc::new(store);
        let backend: Arc<dyn Backend> = Arc::clone(&store) as Arc<dyn Backend>;
        Self::start(backend, Some(store), config)
    }

    /// Opens the tokendb database at PostgreSQL `url` (a `postgres://` URL or a `key=value`
    /// string), creating its tables and data keys first if the database (or the schema of
    /// [`PgOptions::schema`]) has none. Every replica of a server opens the same URL with the
    /// same master key and shares one token state. The same `TokenDb`, with the same API, as
    /// on a file; the file-only operations (`compact`, `backup`, `stats`, `verify`, ...)
    /// return [`StoreError::Unsupported`]. Unless `config` sets a clock, deadlines are decided
    /// by the database server's clock.
    ///
    /// # Errors
    /// [`StoreError::WrongMasterKey`], [`StoreError::NotATokenDb`] (a schema with other
    /// tables), [`StoreError::NewerFormat`], [`StoreError::Storage`] (the URL does not parse,
    /// the server cannot be reached).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, master: &crate::MasterKey, config: Config) -> Result<Self> {
        Self::open_postgres_with(url, master, config, PgOptions::default())
    }

    /// As [`TokenDb::open_postgres`], with connection settings.
    ///
    /// # Errors
    /// As [`TokenDb::open_postgres`].
    #[cfg(feature = "postgres")]
    pub fn open_postgres_with(
        url: &str,
        master: &crate::MasterKey,
        config: Config,
        options: PgOptions,
    ) -> Result<Self> {
        let store = tokendb_postgres::PgStore::open(url, master, options)?;
        Self::start(Arc::new(store), None, config)
    }

    fn start(
        backend: Arc<dyn Backend>,
        file: Option<Arc<Store>>,
        mut config: Config,
    ) -> Result<Self> {
        if !config.clock_chosen
            && let Some(clock) = backend.clock()
        {
            config.clock = clock;
        }
        let events = Arc::new(EventBus::default());
        let sweeper = if config.sweeper.enabled {
            let bus = Arc::clone(&events);
            let observer: tokendb_sweeper::PassObserver = Box::new(move |r: &PassReport| {
                bus.emit(Event::Expired {
                    families: r.families,
                    tokens: r.tokens,
                });
            });
            Some(
                Sweeper::start_with_observer(
                    Arc::clone(&backend),
                    Arc::clone(&config.clock),
                    config.sweeper,
                    observer,
                )
                .map_err(StoreError::Io)?,
            )
        } else {
            None
        };
        let fixed = backend.keys();
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                fixed,
                file,
                config,
                events,
                sweeper: Mutex::new(sweeper),
                manual_metrics: SweeperMetrics::default(),
                last_now: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                lookups: LookupMetrics::register(),
            }),
        })
    }

    /// Where the data lives: the file's path, or the PostgreSQL host, port, database and schema
    /// (never a user or password).
    #[must_use]
    pub fn location(&self) -> String {
        self.inner.backend.location()
    }

    /// The current time: the clock's, but never earlier than a time already used. A clock that
    /// steps backwards (NTP) cannot make a rotation's time precede the previous one's.
    /// The database's time, Unix milliseconds: its clock ([`crate::ConfigBuilder::clock`]),
    /// never earlier than a time it already used. For checks that belong with the database's
    /// decisions (a DPoP proof's `iat` window, say), so that a test's manual clock drives them
    /// too.
    pub fn now_ms(&self) -> u64 {
        self.now()
    }

    fn now(&self) -> u64 {
        let t = self.inner.config.clock.now_ms();
        // Read first: in the common case time has not gone back and, within a millisecond,
        // nothing needs writing, so concurrent lookups do not contend on this cache line.
        let prev = self.inner.last_now.load(Ordering::Acquire);
        if t > prev {
            self.inner.last_now.fetch_max(t, Ordering::AcqRel).max(t)
        } else {
            prev
        }
    }

    /// Hands a lookup to the backend's own threads if it has them (see `Backend::offload`).
    pub(crate) fn offload(
        &self,
        job: tokendb_backend::Lookup,
    ) -> std::result::Result<(), tokendb_backend::Lookup> {
        self.inner.backend.offload(job)
    }

    fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// The current key ring: what sealing and opening bodies need.
    fn keys(&self) -> Arc<KeyRing> {
        self.inner.backend.keys()
    }

    /// The lookup, tag and index keys (fixed for the life of the database), without a lock:
    /// for hashing tokens, subjects and client ids, and checking refresh-token tags.
    fn hashing(&self) -> &KeyRing {
        &self.inner.fixed
    }

    fn emit(&self, event: Event) {
        self.inner.events.emit(event);
    }

    /// The event bus, for a write's completion to emit on (from the backend's thread, whether
    /// or not the caller still waits).
    fn events(&self) -> Arc<EventBus> {
        Arc::clone(&self.inner.events)
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Store(StoreError::Closed));
        }
        if let Some(why) = self.inner.backend.failure() {
            return Err(Error::Store(StoreError::Failed(why)));
        }
        Ok(())
    }

    fn parse(&self, token: &str) -> Result<ParsedToken> {
        self.inner
            .config
            .format
            .parse(token)
            .map_err(Error::Malformed)
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Subscribes to [`Event`]s. Each subscriber has its own bounded queue
    /// ([`crate::ConfigBuilder::event_capacity`]); when it is full, events for that subscriber are
    /// dropped rather than slowing the database.
    #[must_use]
    pub fn subscribe(&self) -> EventReceiver {
        self.inner
            .events
            .subscribe(self.inner.config.event_capacity)
    }

    /// Stops the sweeper, drains the writer (queued writes complete) and closes the database.
    /// Every later call, on any clone, returns [`StoreError::Closed`].
    ///
    /// # Errors
    /// Storage errors from the final close.
    pub fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let sweeper = self.inner.sweeper.lock().ok().and_then(|mut g| g.take());
        if let Some(s) = sweeper {
            s.shutdown();
        }
        Ok(self.inner.backend.close()?)
    }

    /// The redb store under this handle, for white-box tests of the file (its raw tables).
    /// Compiled only with the `test-hooks` feature; not part of the supported API.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    #[must_use]
    pub fn redb_file_for_tests(&self) -> Option<&Arc<Store>> {
        self.inner.file.as_ref()
    }

    /// The current key ring, whichever the backend (tests decode records with it).
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    #[must_use]
    pub fn keys_for_tests(&self) -> Arc<KeyRing> {
        self.keys()
    }

    /// A database on a store the test opened itself (on a fault-injecting disk, say).
    /// Compiled only with the `test-hooks` feature; not part of the supported API.
    ///
    /// # Errors
    /// As [`TokenDb::open`] after the store is open: starting the sweeper.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn from_store_for_tests(store: Store, config: Config) -> Result<Self> {
        Self::start_file(store, config)
    }
}

/// Submits a write through `start`, finishing `op` (its span and metrics) when the backend
/// answers, on the backend's thread, whether or not the caller still waits.
fn submit<T: Label + Send + 'static>(op: Op, start: impl FnOnce(Done<T>)) -> Pending<T> {
    Pending::start(|done| start(done.observed_timed(move |r, t| op.finish(r.label(), Some(t)))))
}

/// An operation refused before any write.
fn refuse<T: Send + 'static>(op: Op, e: Error) -> Pending<T, Error> {
    op.finish(e.label(), None);
    Pending::ready(Err(e))
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut g) = self.sweeper.lock()
            && let Some(s) = g.take()
        {
            s.shutdown();
        }
        let _ = self.backend.close();
    }
}
