//! Exit codes, and errors that say what to do next.

use serde_json::{Value, json};
use tokendb::StoreError;

/// The process exit codes, documented in `docs/operations.md` and `tokendb --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The command did what was asked.
    Ok = 0,
    /// `verify` found problems.
    Problems = 1,
    /// Bad arguments or configuration: no master key, an unreadable key file, a malformed
    /// token or family id. (clap's own usage errors use 2 as well.)
    Usage = 2,
    /// The database cannot be opened: no such file, not a tokendb file, wrong master key, or a
    /// newer format. Nothing was written.
    CannotOpen = 3,
    /// Anything else: I/O or storage errors, a damaged record met on the way.
    Failed = 4,
    /// Another process has the database open (redb lets one process open a file).
    Locked = 5,
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  1  verify found problems
  2  usage or configuration error (no master key, bad key file, malformed token or family id)
  3  cannot open the database: not found, not a tokendb file, wrong master key, newer format
  4  other error (I/O, storage, a damaged record)
  5  the database is open in another process

The master key comes from --master-key-file FILE or the TOKENDB_MASTER_KEY environment
variable (64 hex digits or base64 of 32 bytes), never from a plain argument.";

/// A failure, with the exit code it maps to and a hint for the operator.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    /// Stable machine name (`wrong_master_key`, `not_found`, …).
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    /// What to do next.
    pub(crate) hint: String,
}

impl CliError {
    pub(crate) fn new(
        exit: Exit,
        kind: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            exit,
            kind,
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub(crate) fn usage(
        kind: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::new(Exit::Usage, kind, message, hint)
    }

    pub(crate) fn io(what: &str, e: &std::io::Error) -> Self {
        Self::new(
            Exit::Failed,
            "io",
            format!("{what}: {e}"),
            "check the path, free space and permissions, then run the command again",
        )
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "error": {
                "kind": self.kind,
                "message": self.message,
                "hint": self.hint,
                "exit_code": self.exit.code(),
            }
        })
    }
}

const KEY_HINT: &str = "use the key the database was created or last re-keyed with, from --master-key-file FILE or TOKENDB_MASTER_KEY";
const DAMAGE_HINT: &str = "run `tokendb verify PATH` to list the damage, then restore the file from a backup (see docs/operations.md)";

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongMasterKey => Self::new(
                Exit::CannotOpen,
                "wrong_master_key",
                "wrong master key: it does not open this database's data keys (nothing was written)",
                KEY_HINT,
            ),
            StoreError::NotATokenDb(p) => Self::new(
                Exit::CannotOpen,
                "not_a_tokendb",
                format!("{p} is not a tokendb database (nothing was written)"),
                "check the path: it must name a file created by tokendb",
            ),
            StoreError::NotFound(p) => Self::new(
                Exit::CannotOpen,
                "not_found",
                format!("{p} does not exist"),
                "check the path; the operator commands never create a database",
            ),
            e @ StoreError::NewerFormat { .. } => Self::new(
                Exit::CannotOpen,
                "newer_format",
                e.to_string(),
                "use a tokendb command at least as new as the server that wrote the file",
            ),
            e @ StoreError::OlderFormat { .. } => Self::new(
                Exit::CannotOpen,
                "older_format",
                e.to_string(),
                "this file predates the format this tokendb reads; use the build that wrote it",
            ),
            StoreError::Locked => Self::new(
                Exit::Locked,
                "locked",
                "the database is open in another process (redb lets one process open a file at a time)",
                "stop the server that has it open, or do this maintenance from inside the server through the tokendb API (see docs/operations.md)",
            ),
            StoreError::Corrupt(e) => Self::new(
                Exit::Failed,
                "damaged_record",
                format!("damaged or tampered record: {e}"),
                DAMAGE_HINT,
            ),
            StoreError::Damaged(why) => Self::new(
                Exit::Failed,
                "damaged_file",
                format!("the database file is damaged: {why}"),
                DAMAGE_HINT,
            ),
            StoreError::Invalid(e) => Self::usage(
                "invalid_input",
                format!("invalid input: {e}"),
                "correct the value and run the command again",
            ),
            StoreError::Storage(e) => Self::new(
                Exit::Failed,
                "storage",
                format!("storage error: {e}"),
                DAMAGE_HINT,
            ),
            StoreError::Io(e) => Self::io("I/O error", &e),
            e => Self::new(
                Exit::Failed,
                "failed",
                e.to_string(),
                "run the command again; if it keeps failing, run `tokendb verify PATH`",
            ),
        }
    }
}

impl From<tokendb::Error> for CliError {
    fn from(e: tokendb::Error) -> Self {
        match e {
            tokendb::Error::Store(e) => e.into(),
            tokendb::Error::Malformed(e) => Self::usage(
                "malformed_token",
                format!("malformed token: {e}"),
                "pass the whole token as issued (use `-` to read it from stdin), and --token-prefix if the server uses another prefix than `tdb`",
            ),
            e @ tokendb::Error::Config(_) => Self::usage(
                "config",
                e.to_string(),
                "correct the option and run the command again",
            ),
            tokendb::Error::InvalidInput(e) => Self::usage(
                "invalid_input",
                format!("invalid input: {e}"),
                "correct the value and run the command again",
            ),
            e => Self::new(
                Exit::Failed,
                "failed",
                e.to_string(),
                "run the command again; if it keeps failing, run `tokendb verify PATH`",
            ),
        }
    }
}
