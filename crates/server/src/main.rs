//! `tokendb-server`: the reference authorization server on a local tokendb file.
//!
//! ```text
//! tokendb-server [--addr 127.0.0.1:8080] [--db ./tokendb-server.tdb] [--redirect-uri URI]
//!                [--dpop-nonces]
//! ```
//!
//! `--dpop-nonces` makes DPoP proofs carry a server nonce (RFC 9449 §8).
//!
//! It serves the demo user `demo-user` and two clients: `demo-client` (confidential, secret
//! `demo-secret`) and `demo-spa` (public), both with the one redirect URI given (default
//! `http://127.0.0.1:8081/callback`). The master key is kept beside the database in
//! `<db>.key` (mode 0600): demo only, as in `tokendb demo`. `GET /metrics` serves tokendb's
//! metrics in the Prometheus text format.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use tokendb::{Config, MasterKey, TokenDb};
use tokendb_server::{DemoClient, Settings, app};

fn master_key(db: &Path) -> Result<MasterKey, Box<dyn std::error::Error>> {
    let path = PathBuf::from(format!("{}.key", db.display()));
    if path.exists() {
        return Ok(MasterKey::from_text(
            std::fs::read_to_string(&path)?.trim(),
        )?);
    }
    let key = MasterKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&path)?;
    f.write_all(key.to_hex().as_bytes())?;
    Ok(key)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut db_path = PathBuf::from("tokendb-server.tdb");
    let mut redirect = "http://127.0.0.1:8081/callback".to_owned();
    let mut dpop_nonces = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = value()?,
            "--db" => db_path = value()?.into(),
            "--redirect-uri" => redirect = value()?,
            "--dpop-nonces" => dpop_nonces = true,
            other => return Err(format!("unknown argument {other}; see the file's header").into()),
        }
    }
    // The Prometheus recorder goes in before the database opens: tokendb registers its lookup
    // counters at open (docs/operations.md, "Spans and metrics").
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let master = master_key(&db_path)?;
    let db = TokenDb::open_or_create(&db_path, &master, Config::default())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let mut settings = Settings::new(
        &issuer,
        vec![
            DemoClient::new("demo-client", Some("demo-secret"), &redirect),
            DemoClient::new("demo-spa", None, &redirect),
        ],
    );
    if dpop_nonces {
        settings = settings.with_dpop_nonces();
    }
    eprintln!(
        "tokendb-server: {issuer} (metadata at {issuer}/.well-known/oauth-authorization-server)"
    );
    let router = app(db.clone(), settings).route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }),
    );
    axum::serve(listener, router).await?;
    db.close()?;
    Ok(())
}
