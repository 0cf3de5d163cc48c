//! Where the master key comes from: a key file or the environment, never an argument.

use crate::error::CliError;
use std::path::Path;
use tokendb::MasterKey;
use zeroize::Zeroizing;

/// The environment variable holding the master key text.
pub(crate) const ENV: &str = "TOKENDB_MASTER_KEY";

const FORMS: &str = "64 hex digits or base64 of 32 bytes";

/// The master key from `--master-key-file` if given, else from `TOKENDB_MASTER_KEY`.
pub(crate) fn master_key(file: Option<&Path>) -> Result<MasterKey, CliError> {
    if let Some(path) = file {
        return from_file(path, "--master-key-file");
    }
    let text = match std::env::var(ENV) {
        Ok(t) => Zeroizing::new(t),
        Err(std::env::VarError::NotPresent) => {
            return Err(CliError::usage(
                "no_master_key",
                "no master key given",
                format!(
                    "pass --master-key-file FILE (mode 0600) or set {ENV} ({FORMS}); a key is never accepted as a plain argument"
                ),
            ));
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(CliError::usage(
                "bad_master_key",
                format!("{ENV} is not valid text"),
                format!("set it to {FORMS}"),
            ));
        }
    };
    MasterKey::from_text(&text).map_err(|_| {
        CliError::usage(
            "bad_master_key",
            format!("{ENV} does not hold a master key"),
            format!("set it to {FORMS}"),
        )
    })
}

/// Reads a master key file; warns on stderr if others may read it.
pub(crate) fn from_file(path: &Path, option: &str) -> Result<MasterKey, CliError> {
    let text = std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| {
            CliError::usage(
                "master_key_file",
                format!(
                    "cannot read the key file {} ({option}): {e}",
                    path.display()
                ),
                "check the path and that this user may read it",
            )
        })?;
    warn_if_readable_by_others(path);
    MasterKey::from_text(&text).map_err(|_| {
        CliError::usage(
            "bad_master_key",
            format!(
                "the key file {} ({option}) does not hold a master key",
                path.display()
            ),
            format!("the file must contain {FORMS}, optionally followed by a newline"),
        )
    })
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: the key file {} can be read by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            m.permissions().mode() & 0o777,
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}
