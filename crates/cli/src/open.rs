//! Opening a database for an operator command.

use crate::error::CliError;
use crate::key;
use clap::Args;
use std::path::{Path, PathBuf};
use tokendb::{Config, MasterKey, SweeperConfig, TokenDb};

/// What every operator command takes: the file, where its key is, and the output form.
#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    /// The database file.
    pub(crate) path: PathBuf,
    /// File holding the master key: 64 hex digits or base64 of 32 bytes (mode 0600). Without
    /// it, the key is read from the TOKENDB_MASTER_KEY environment variable.
    #[arg(long, value_name = "FILE")]
    pub(crate) master_key_file: Option<PathBuf>,
    /// Print one JSON document on stdout (errors too) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// An open database and the key that opened it.
pub(crate) struct Opened {
    pub(crate) db: TokenDb,
    pub(crate) master: MasterKey,
}

/// Opens `args.path` with the background sweeper off: an operator command changes only what it
/// was asked to. `prefix` is the token prefix, for commands that parse tokens.
pub(crate) fn open(args: &DbArgs, prefix: Option<&str>) -> Result<Opened, CliError> {
    exists(&args.path)?;
    let master = key::master_key(args.master_key_file.as_deref())?;
    let db = open_with(&args.path, &master, prefix)?;
    Ok(Opened { db, master })
}

pub(crate) fn open_with(
    path: &Path,
    master: &MasterKey,
    prefix: Option<&str>,
) -> Result<TokenDb, CliError> {
    open_configured(path, master, prefix, SweeperConfig::default().batch_size)
}

/// As [`open`], with manual sweeps in batches of `sweep_batch` entries.
pub(crate) fn open_sweeping(args: &DbArgs, sweep_batch: usize) -> Result<Opened, CliError> {
    exists(&args.path)?;
    let master = key::master_key(args.master_key_file.as_deref())?;
    let db = open_configured(&args.path, &master, None, sweep_batch)?;
    Ok(Opened { db, master })
}

fn open_configured(
    path: &Path,
    master: &MasterKey,
    prefix: Option<&str>,
    sweep_batch: usize,
) -> Result<TokenDb, CliError> {
    let mut builder = Config::builder().sweeper(
        SweeperConfig::DEFAULT
            .with_enabled(false)
            .with_batch_size(sweep_batch),
    );
    if let Some(p) = prefix {
        builder = builder.token_prefix(p);
    }
    let config = builder.build()?;
    Ok(TokenDb::open(path, master, config)?)
}

/// Refuses a missing file before asking for a key: the more useful message first.
fn exists(path: &Path) -> Result<(), CliError> {
    if path.exists() {
        Ok(())
    } else {
        Err(tokendb::StoreError::NotFound(path.display().to_string()).into())
    }
}

/// The file's size in bytes.
pub(crate) fn file_size(path: &Path) -> Result<u64, CliError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| CliError::io(&format!("cannot stat {}", path.display()), &e))
}
