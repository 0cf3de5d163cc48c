//! Where a test's database lives: a file, or a schema of the throw-away PostgreSQL server.
//! The shared suites (`integration/` and `postgres/`) and the reference model open their
//! databases through this, so the same tests run on both backends.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tokendb::{Config, MasterKey, PgOptions, TokenDb};
use tokendb_servers::{PostgresOptions, PostgresServer};

/// Where a database lives.
#[derive(Clone, Debug)]
pub enum Place {
    /// A redb file.
    File(PathBuf),
    /// A schema of a PostgreSQL database.
    Postgres {
        /// The connection URL.
        url: String,
        /// The schema holding tokendb's tables.
        schema: String,
    },
}

impl Place {
    /// A new, empty schema on the shared test server (started on first use).
    ///
    /// # Panics
    /// If PostgreSQL cannot be installed or started: the test needing it fails with why.
    #[must_use]
    pub fn fresh_postgres() -> Self {
        Self::Postgres {
            url: postgres_url().to_owned(),
            schema: fresh_schema(),
        }
    }

    /// Options for a test replica: few connections (tests open many databases at once).
    #[must_use]
    pub fn pg_options(schema: &str) -> PgOptions {
        PgOptions::default()
            .with_schema(schema)
            .with_writers(4)
            .with_readers(2)
    }

    /// Creates the database here.
    ///
    /// # Errors
    /// As [`TokenDb::create`] / [`TokenDb::open_postgres`].
    pub fn create(&self, master: &MasterKey, config: Config) -> tokendb::Result<TokenDb> {
        match self {
            Self::File(path) => TokenDb::create(path, master, config),
            Self::Postgres { url, schema } => {
                TokenDb::open_postgres_with(url, master, config, Self::pg_options(schema))
            }
        }
    }

    /// Opens the database here again (another replica, or after a close).
    ///
    /// # Errors
    /// As [`TokenDb::open`] / [`TokenDb::open_postgres`].
    pub fn open(&self, master: &MasterKey, config: Config) -> tokendb::Result<TokenDb> {
        match self {
            Self::File(path) => TokenDb::open(path, master, config),
            Self::Postgres { url, schema } => {
                TokenDb::open_postgres_with(url, master, config, Self::pg_options(schema))
            }
        }
    }
}

/// The URL of the test process's PostgreSQL server, started (and installed from Debian
/// packages if missing) on first use. Its watchdog stops it when this process ends.
///
/// # Panics
/// If the server cannot be started.
#[allow(clippy::panic)] // test support: a server that does not start fails the test, saying why
pub fn postgres_url() -> &'static str {
    static SERVER: OnceLock<(PostgresServer, String)> = OnceLock::new();
    &SERVER
        .get_or_init(|| {
            let options = PostgresOptions {
                shared_buffers_mb: 128,
                max_connections: 300,
                // These tests prove tokendb's logic; a commit need not wait for a disk flush.
                durable: false,
            };
            match PostgresServer::start(&std::env::temp_dir(), options) {
                Ok(server) => {
                    let url = server.url();
                    (server, url)
                }
                Err(e) => panic!("cannot start PostgreSQL for the tests: {e}"),
            }
        })
        .1
}

/// The address of the test process's PostgreSQL server.
///
/// # Panics
/// If the server cannot be started, or its URL does not name a port.
#[allow(clippy::panic)] // test support
#[must_use]
pub fn postgres_addr() -> std::net::SocketAddr {
    let url = postgres_url();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {url}"));
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

/// A schema name no other test of any process uses.
#[must_use]
pub fn fresh_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
