//! One connection with its prepared statements, and how PostgreSQL's errors map to tokendb's.

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use std::collections::HashMap;
use tokendb_backend::{EngineError, StoreError};
use tokendb_core::CoreError;
use tokio_postgres_rustls::MakeRustlsConnect;

/// An error inside a transaction: PostgreSQL's (which may call for a retry) or tokendb's own.
#[derive(Debug)]
pub(crate) enum TxError {
    /// From the client or the server.
    Pg(postgres::Error),
    /// A decision or a decoding failure: returned as is, after a rollback.
    Store(StoreError),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        Self::Pg(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

pub(crate) type TxResult<T> = Result<T, TxError>;

/// What a failed statement calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The server gave up the transaction to keep others consistent (serialization failure,
    /// deadlock): nothing of it was applied; run it again.
    Conflict,
    /// The connection is gone (or the server is shutting down or starting): reconnect; if a
    /// commit was in flight, its outcome is unknown until asked.
    Connection,
    /// Anything else: report it.
    Other,
}

pub(crate) fn kind(e: &postgres::Error) -> Kind {
    if e.is_closed() {
        return Kind::Connection;
    }
    match e.code() {
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            Kind::Conflict
        }
        Some(c)
            if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::CONNECTION_FAILURE
                || *c == SqlState::CONNECTION_EXCEPTION
                || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            // A read-only transaction error is what a demoted primary or a standby not yet
            // promoted answers: reconnecting finds the new primary.
            Kind::Connection
        }
        Some(_) => Kind::Other,
        // No SQL state: an I/O error or a protocol error of the connection.
        None => Kind::Connection,
    }
}

/// A PostgreSQL error with the server's message in its `Display` (the client's own says only
/// "db error"; the server's words are its source).
#[derive(Debug)]
struct PgError {
    message: String,
    source: postgres::Error,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A PostgreSQL error as tokendb reports it.
pub(crate) fn store_error(e: postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!(
            "PostgreSQL {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        ),
        None => match std::error::Error::source(&e) {
            Some(s) => format!("PostgreSQL client: {e}: {s}"),
            None => format!("PostgreSQL client: {e}"),
        },
    };
    StoreError::Storage(EngineError::new(PgError { message, source: e }))
}

impl From<TxError> for StoreError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Pg(e) => store_error(e),
            TxError::Store(e) => e,
        }
    }
}

/// A record that does not authenticate.
pub(crate) fn corrupt(e: CoreError) -> StoreError {
    StoreError::Corrupt(e)
}

/// A connection and the statements prepared on it (each once, on first use).
pub(crate) struct Conn {
    client: Client,
    prepared: HashMap<&'static str, Statement>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn connect(
        config: &postgres::Config,
        tls: &MakeRustlsConnect,
    ) -> Result<Self, postgres::Error> {
        Ok(Self {
            client: config.connect(tls.clone())?,
            prepared: HashMap::new(),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, params)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, params)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    /// Statements without parameters or results (`BEGIN`, `COMMIT`, the schema).
    pub(crate) fn batch(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.client.batch_execute(sql)
    }
}

/// The TLS connector: the system's root certificates, plus `extra_pem` (PEM certificates the
/// application trusts, a private CA say). Certificates are always verified, against the host
/// name (or IP address) the URL names; whether TLS is used is the URL's `sslmode` (`disable`,
/// `prefer` — the default: TLS if the server offers it — or `require`).
pub(crate) fn tls(extra_pem: &[u8], system_roots: bool) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    if system_roots {
        // Certificates the platform store holds but rustls cannot parse are skipped, as a
        // browser would; a store that cannot be read at all leaves only the extra ones.
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    for cert in CertificateDer::pem_slice_iter(extra_pem) {
        let cert = cert.map_err(|_| {
            StoreError::Invalid(CoreError::BadField("a root certificate that is not PEM"))
        })?;
        roots.add(cert).map_err(|_| {
            StoreError::Invalid(CoreError::BadField("a root certificate rustls cannot use"))
        })?;
    }
    // ring, not aws-lc-rs: no C library to build into every server for one database
    // connection. rustls 0.23.48 deprecates ring's provider for its lack of post-quantum key
    // exchange; X25519 and P-256 protect a connection inside one deployment well enough.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| StoreError::Invalid(CoreError::BadField("TLS protocol versions")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Unix milliseconds as PostgreSQL's `bigint`, saturating (no deadline reaches 2^63 ms).
pub(crate) fn ms(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A `bigint` read back as Unix milliseconds (a negative value, never written, reads as 0).
pub(crate) fn from_ms(t: i64) -> u64 {
    u64::try_from(t).unwrap_or(0)
}
