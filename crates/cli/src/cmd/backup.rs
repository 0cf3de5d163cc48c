//! `tokendb backup`: a consistent copy of a database no other process has open.

use crate::error::{CliError, Exit};
use crate::open::{DbArgs, open, open_with};
use crate::output::{Report, bytes, num};
use serde_json::json;
use std::path::Path;

pub(crate) fn run(args: &DbArgs, dest: &Path) -> Result<Report, CliError> {
    if dest.exists() {
        return Err(CliError::new(
            Exit::Usage,
            "destination_exists",
            format!("{} already exists", dest.display()),
            "name a new file; a backup never overwrites one",
        ));
    }
    // Opening takes redb's exclusive lock: no server can write while the copy is made.
    let opened = open(args, None)?;
    let records: u64 = opened.db.records_by_key()?.values().sum();
    let copied = opened.db.backup(dest)?;
    opened.db.close()?;
    // Open the copy with the same key: proves it is whole, and lets redb finish its recovery
    // there once, so the copy is ready to use.
    let copy = open_with(dest, &opened.master, None)?;
    let copy_records: u64 = copy.records_by_key()?.values().sum();
    copy.close()?;
    if copy_records != records {
        return Err(CliError::new(
            Exit::Failed,
            "backup_mismatch",
            format!(
                "the copy holds {copy_records} records, the original {records}; the copy at {} is not usable",
                dest.display()
            ),
            "delete the copy and run the backup again",
        ));
    }
    let json =
        json!({ "destination": dest.display().to_string(), "bytes": copied, "records": records });
    let text = format!(
        "backup: copied {} ({} records) to {}; it opens with the same master key\n",
        bytes(copied),
        num(records),
        dest.display()
    );
    Ok(Report::ok(json, text))
}
