//! TLS to the database: with `sslmode=require` a replica connects only over TLS, to a server
//! whose certificate chains to a root it trusts (the system's, or one the application adds).

use crate::common::grant;
use tokendb::{Config, Error, MasterKey, PgOptions, StoreError, SweeperConfig, TokenDb};
use tokendb_servers::{PostgresOptions, PostgresServer};

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, server chain PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

#[test]
fn sslmode_require_connects_over_verified_tls_only() {
    let server = PostgresServer::start(
        &std::env::temp_dir(),
        PostgresOptions {
            shared_buffers_mb: 64,
            max_connections: 50,
            durable: false,
        },
    )
    .unwrap();
    let (ca, chain, key) = certificates();
    server.enable_tls(&chain, &key).unwrap();
    let url = format!("{}?sslmode=require", server.url());
    let config = || {
        Config::builder()
            .sweeper(SweeperConfig::DEFAULT.with_enabled(false))
            .build()
            .unwrap()
    };
    let master = MasterKey::generate();
    let options = PgOptions::default().with_writers(2).with_readers(2);

    // The server's certificate chains to no root this replica trusts: refused.
    let err = TokenDb::open_postgres_with(&url, &master, config(), options.clone()).unwrap_err();
    assert!(matches!(err, Error::Store(StoreError::Storage(_))), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "the error says why: {err}"
    );

    // Trusting the CA: it works, and every connection of the replica is encrypted.
    let db = TokenDb::open_postgres_with(
        &url,
        &master,
        config(),
        options.with_root_certificates_pem(ca.into_bytes()),
    )
    .unwrap();
    let rt = db.issue_refresh(&grant(1)).unwrap();
    let next = db
        .rotate(rt.token.expose(), &grant(1).client_id, None)
        .unwrap();
    assert!(db.validate(next.token.expose()).unwrap().is_active());
    let mut admin = server.config().connect(postgres::NoTls).unwrap();
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'tokendb'",
            &[],
        )
        .unwrap();
    let (encrypted, all): (i64, i64) = (row.get(0), row.get(1));
    assert!(all > 0);
    assert_eq!(encrypted, all, "a replica connection without TLS");
    db.close().unwrap();
}
