//! The operator commands, one module each.

pub(crate) mod backup;
pub(crate) mod compact;
pub(crate) mod inspect;
pub(crate) mod rekey;
pub(crate) mod revoke;
pub(crate) mod stats;
pub(crate) mod sweep;
pub(crate) mod verify;

use crate::error::CliError;
use std::io::Read;
use zeroize::Zeroizing;

/// A token given on the command line, or read from stdin when it is `-` (so that it stays out
/// of shell history and `ps`).
pub(crate) fn read_token(arg: &str) -> Result<Zeroizing<String>, CliError> {
    let text = if arg == "-" {
        let mut buf = Zeroizing::new(String::new());
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut buf)
            .map_err(|e| CliError::io("cannot read the token from stdin", &e))?;
        Zeroizing::new(buf.trim().to_owned())
    } else {
        Zeroizing::new(arg.trim().to_owned())
    };
    if text.is_empty() {
        return Err(CliError::usage(
            "malformed_token",
            "no token given",
            "pass the token, or `-` and the token on stdin",
        ));
    }
    Ok(text)
}

/// Key ids as a JSON object `{ "1": n, … }`.
pub(crate) fn by_key_json(
    m: &std::collections::BTreeMap<tokendb::KeyId, u64>,
) -> serde_json::Value {
    m.iter()
        .map(|(k, n)| (k.0.to_string(), serde_json::Value::from(*n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Key ids as text: `1: 10, 2: 5`.
pub(crate) fn by_key_text(m: &std::collections::BTreeMap<tokendb::KeyId, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("key {}: {}", k.0, crate::output::num(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}
