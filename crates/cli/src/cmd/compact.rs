//! `tokendb compact`: give the file's free pages back to the file system.

use crate::error::CliError;
use crate::open::{DbArgs, file_size, open};
use crate::output::{Report, bytes};
use serde_json::json;

pub(crate) fn run(args: &DbArgs) -> Result<Report, CliError> {
    let opened = open(args, None)?;
    let before = file_size(&args.path)?;
    let moved = opened.db.compact()?;
    opened.db.close()?;
    let after = file_size(&args.path)?;
    let json = json!({ "bytes_before": before, "bytes_after": after, "compacted": moved });
    let text = format!(
        "compact: {} → {} ({})\n",
        bytes(before),
        bytes(after),
        if after < before {
            format!("{} returned to the file system", bytes(before - after))
        } else {
            "nothing to return".to_owned()
        }
    );
    Ok(Report::ok(json, text))
}
